//! The cluster-agent library; its parts arrive with the agent issue.
