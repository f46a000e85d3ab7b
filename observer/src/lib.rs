//! The observer library; its parts arrive with the observer issue.
