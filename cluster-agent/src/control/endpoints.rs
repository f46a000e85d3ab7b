//! Which observer replica to try next: the order of one connection round over the
//! `--observer` endpoints.
//!
//! Every round tries each endpoint at most once, in a fresh random order
//! ([`EndpointOrder::Random`], the default: agents of a fleet that share one list
//! spread over the replicas instead of all landing on the first), or in the order given
//! ([`EndpointOrder::Listed`]: a preferred replica first, e.g. the one in the agent's
//! own region). The endpoint that failed last (its connection attempt failed, or its
//! stream ended) goes to the end of the next round, so an agent whose replica died
//! moves to a live one at once instead of first waiting for the dead one's timeout.
//! The caller moves on to the next endpoint of the round after a failed attempt, and
//! waits the jittered backoff only between rounds. An endpoint is an https URL with a
//! host ([`check_observer_url`]), checked with the other flags before the agent starts.

use super::ControlError;

/// In which order a round tries the endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum EndpointOrder {
    /// A fresh random order every round, spreading agents over the replicas.
    #[default]
    Random,
    /// The order given, preferring the first endpoint.
    Listed,
}

/// The observer endpoints and the order of the next round.
#[derive(Clone, Debug)]
pub struct Endpoints {
    urls: Vec<String>,
    order: EndpointOrder,
    last_failed: Option<String>,
    rng: fastrand::Rng,
}

impl Endpoints {
    /// `urls` tried in `order`; duplicates are tried once.
    pub fn new(urls: Vec<String>, order: EndpointOrder) -> Self {
        Self::with_rng(urls, order, fastrand::Rng::new())
    }

    /// As [`Endpoints::new`], with a given random generator (tests seed it).
    pub fn with_rng(urls: Vec<String>, order: EndpointOrder, rng: fastrand::Rng) -> Self {
        let mut unique = Vec::with_capacity(urls.len());
        for url in urls {
            if !unique.contains(&url) {
                unique.push(url);
            }
        }
        Self {
            urls: unique,
            order,
            last_failed: None,
            rng,
        }
    }

    /// Every endpoint.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The endpoints in the order the next round tries them: each once, the one that
    /// failed last at the end.
    pub fn round(&mut self) -> Vec<String> {
        let mut round = self.urls.clone();
        if self.order == EndpointOrder::Random {
            self.rng.shuffle(&mut round);
        }
        if let Some(failed) = &self.last_failed
            && let Some(position) = round.iter().position(|url| url == failed)
        {
            let failed = round.remove(position);
            round.push(failed);
        }
        round
    }

    /// Notes that `url` failed (its attempt failed or its stream ended).
    pub fn failed(&mut self, url: &str) {
        self.last_failed = Some(url.to_owned());
    }
}

/// Checks one `--observer` endpoint: an https URL with a host.
pub fn check_observer_url(text: &str) -> Result<(), ControlError> {
    let bad_url = |reason: &str| ControlError::BadUrl {
        url: text.to_owned(),
        reason: reason.to_owned(),
    };
    let url = url::Url::parse(text).map_err(|e| bad_url(&e.to_string()))?;
    if url.scheme() != "https" {
        return Err(bad_url(
            "the control stream needs TLS, because the agent's certificate is its identity",
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad_url("no host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn urls(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| format!("https://{n}:8443")).collect()
    }

    #[test]
    fn every_round_tries_each_endpoint_once() {
        let mut endpoints = Endpoints::with_rng(
            urls(&["a", "b", "c", "a"]),
            EndpointOrder::Random,
            fastrand::Rng::with_seed(7),
        );
        assert_eq!(endpoints.urls(), urls(&["a", "b", "c"]));
        for _ in 0..100 {
            let mut round = endpoints.round();
            round.sort();
            assert_eq!(round, urls(&["a", "b", "c"]));
        }
    }

    #[test]
    fn random_rounds_spread_the_first_attempt_over_all_endpoints() {
        // 10,000 agents with the same list: each replica gets about a third of the
        // first attempts, not all of them.
        let mut first = BTreeMap::<String, usize>::new();
        for seed in 0..10_000 {
            let mut endpoints = Endpoints::with_rng(
                urls(&["a", "b", "c"]),
                EndpointOrder::Random,
                fastrand::Rng::with_seed(seed),
            );
            *first.entry(endpoints.round()[0].clone()).or_default() += 1;
        }
        assert_eq!(first.len(), 3, "{first:?}");
        assert!(
            first.values().all(|&n| (2_900..3_800).contains(&n)),
            "{first:?}"
        );
        // One agent's successive rounds vary too.
        let mut endpoints = Endpoints::with_rng(
            urls(&["a", "b", "c"]),
            EndpointOrder::Random,
            fastrand::Rng::with_seed(1),
        );
        let orders: std::collections::BTreeSet<Vec<String>> =
            (0..100).map(|_| endpoints.round()).collect();
        assert_eq!(orders.len(), 6, "all 3! orders occur: {orders:?}");
    }

    #[test]
    fn the_endpoint_that_failed_last_is_tried_last() {
        let mut endpoints = Endpoints::with_rng(
            urls(&["a", "b", "c"]),
            EndpointOrder::Random,
            fastrand::Rng::with_seed(3),
        );
        for _ in 0..100 {
            let round = endpoints.round();
            let failed = round[0].clone();
            endpoints.failed(&failed);
            let next = endpoints.round();
            assert_eq!(next.last(), Some(&failed), "{next:?}");
            assert_eq!(next.len(), 3);
        }
    }

    #[test]
    fn listed_order_prefers_the_first_endpoint_until_it_fails() {
        let mut endpoints = Endpoints::new(urls(&["a", "b", "c"]), EndpointOrder::Listed);
        assert_eq!(endpoints.round(), urls(&["a", "b", "c"]));
        assert_eq!(endpoints.round(), urls(&["a", "b", "c"]));
        endpoints.failed(&urls(&["a"])[0]);
        assert_eq!(endpoints.round(), urls(&["b", "c", "a"]));
        endpoints.failed(&urls(&["b"])[0]);
        assert_eq!(endpoints.round(), urls(&["a", "c", "b"]));
    }

    #[test]
    fn a_single_endpoint_is_always_the_whole_round() {
        let mut endpoints = Endpoints::new(urls(&["a"]), EndpointOrder::Random);
        endpoints.failed(&urls(&["a"])[0]);
        assert_eq!(endpoints.round(), urls(&["a"]));
        endpoints.failed("https://unknown:1");
        assert_eq!(endpoints.round(), urls(&["a"]));
    }
}
