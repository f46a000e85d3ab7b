//! Fair shares of probe slots: [`FairLimiter`] lets at most `capacity` probes run at
//! once, at most `per_tenant` of them for one tenant, and when slots are short it
//! serves the tenants with waiting probes in turn (round robin), each tenant's own
//! probes in the order they asked.
//!
//! # Design note
//!
//! **Why.** One tenant's endpoints that accept a connection and never answer hold a
//! slot each until the probe's timeout. With one first-come queue for everyone, a
//! tenant with a thousand such endpoints keeps the queue full, and every other tenant's
//! probe waits behind all of them: many intervals, that is starvation.
//!
//! **The bound.** A tenant holds at most `per_tenant` slots, so while `per_tenant <
//! capacity` another tenant finds a free slot at once. Should the slots still run out
//! (several such tenants), a released slot goes to the next tenant in turn that has a
//! waiting probe and room under its own cap, not to the longest queue. So a probe of a
//! tenant with no probe running waits at most until one slot is released per tenant
//! ahead of it in the turn order, and a slot is released at the latest when a probe
//! reaches its timeout, which the prober keeps within the interval: no tenant delays
//! another's probe by more than one interval.
//!
//! **Cancellation.** A probe task aborted while it waits (its target was removed)
//! leaves a closed channel behind, skipped when its turn comes; one aborted just after
//! its slot was handed over gives the slot back on drop. Tenants with nothing running
//! and nothing waiting are forgotten, so the map holds only active tenants.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// Slots shared fairly between tenants.
#[derive(Debug)]
pub(crate) struct FairLimiter {
    capacity: usize,
    per_tenant: usize,
    state: Mutex<LimiterState>,
}

#[derive(Debug, Default)]
struct LimiterState {
    /// Slots in use, all tenants.
    in_use: usize,
    /// Tenants with a slot in use or a probe waiting.
    tenants: HashMap<Arc<str>, TenantQueue>,
    /// Tenants with waiting probes, in the order they are served.
    turn: VecDeque<Arc<str>>,
}

#[derive(Debug, Default)]
struct TenantQueue {
    in_use: usize,
    waiting: VecDeque<oneshot::Sender<()>>,
    /// Whether the tenant is in [`LimiterState::turn`].
    in_turn: bool,
}

/// A slot; given back when dropped.
#[derive(Debug)]
pub(crate) struct FairPermit {
    limiter: Arc<FairLimiter>,
    tenant: Arc<str>,
}

impl Drop for FairPermit {
    fn drop(&mut self) {
        self.limiter.release(&self.tenant);
    }
}

/// A probe waiting for a slot; if dropped after the slot was handed over (the task
/// was aborted meanwhile), gives it back.
struct Waiting {
    limiter: Arc<FairLimiter>,
    tenant: Arc<str>,
    granted: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut receiver) = self.granted.take() {
            receiver.close();
            if receiver.try_recv().is_ok() {
                self.limiter.release(&self.tenant);
            }
        }
    }
}

impl FairLimiter {
    /// `capacity` slots, at most `per_tenant` per tenant (both at least 1).
    pub(crate) fn new(capacity: usize, per_tenant: usize) -> Arc<Self> {
        Arc::new(Self {
            capacity: capacity.max(1),
            per_tenant: per_tenant.max(1),
            state: Mutex::new(LimiterState::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, LimiterState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a slot for `tenant`.
    pub(crate) async fn acquire(self: &Arc<Self>, tenant: &Arc<str>) -> FairPermit {
        let receiver = {
            let mut state = self.lock();
            let state = &mut *state;
            let queue = state.tenants.entry(tenant.clone()).or_default();
            if queue.waiting.is_empty()
                && queue.in_use < self.per_tenant
                && state.in_use < self.capacity
            {
                queue.in_use += 1;
                state.in_use += 1;
                return self.permit(tenant);
            }
            let (sender, receiver) = oneshot::channel();
            queue.waiting.push_back(sender);
            if !queue.in_turn {
                queue.in_turn = true;
                state.turn.push_back(tenant.clone());
            }
            // Closed channels of aborted waiters may stand in front: hand out what is
            // free now.
            self.dispatch(state);
            receiver
        };
        let mut waiting = Waiting {
            limiter: self.clone(),
            tenant: tenant.clone(),
            granted: Some(receiver),
        };
        let granted = match waiting.granted.as_mut() {
            Some(receiver) => receiver.await.is_ok(),
            None => false,
        };
        waiting.granted = None;
        debug_assert!(granted, "a waiter's sender is only dropped after a grant");
        self.permit(tenant)
    }

    fn permit(self: &Arc<Self>, tenant: &Arc<str>) -> FairPermit {
        FairPermit {
            limiter: self.clone(),
            tenant: tenant.clone(),
        }
    }

    fn release(&self, tenant: &Arc<str>) {
        let mut state = self.lock();
        let state = &mut *state;
        state.in_use = state.in_use.saturating_sub(1);
        if let Some(queue) = state.tenants.get_mut(tenant) {
            queue.in_use = queue.in_use.saturating_sub(1);
            if queue.in_use == 0 && queue.waiting.is_empty() && !queue.in_turn {
                state.tenants.remove(tenant);
            }
        }
        self.dispatch(state);
    }

    /// Hands free slots to waiting probes, one tenant at a time in turn.
    fn dispatch(&self, state: &mut LimiterState) {
        // Tenants looked at since the last grant: once every tenant in turn was
        // looked at without a grant, all are at their cap.
        let mut without_grant = 0;
        while state.in_use < self.capacity && without_grant < state.turn.len() {
            let Some(tenant) = state.turn.pop_front() else {
                break;
            };
            let Some(queue) = state.tenants.get_mut(&tenant) else {
                continue;
            };
            if queue.in_use >= self.per_tenant {
                state.turn.push_back(tenant);
                without_grant += 1;
                continue;
            }
            let mut granted = false;
            while let Some(sender) = queue.waiting.pop_front() {
                if sender.send(()).is_ok() {
                    granted = true;
                    break;
                }
            }
            if granted {
                queue.in_use += 1;
                state.in_use += 1;
                without_grant = 0;
            }
            if queue.waiting.is_empty() {
                queue.in_turn = false;
                if queue.in_use == 0 {
                    state.tenants.remove(&tenant);
                }
            } else {
                state.turn.push_back(tenant);
            }
        }
    }

    /// Slots in use (tests).
    #[cfg(test)]
    fn in_use(&self) -> usize {
        self.lock().in_use
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn tenant(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    /// Whether `future` finishes without waiting (polled once, no timers involved).
    async fn ready<T>(future: impl std::future::Future<Output = T>) -> Option<T> {
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match future.as_mut().poll(cx) {
                std::task::Poll::Ready(value) => Some(value),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }

    #[tokio::test]
    async fn a_tenant_at_its_cap_leaves_the_other_slots_to_others() {
        let limiter = FairLimiter::new(4, 2);
        let (a, b) = (tenant("a"), tenant("b"));
        let held_a = [limiter.acquire(&a).await, limiter.acquire(&a).await];
        assert!(
            ready(limiter.acquire(&a)).await.is_none(),
            "a is at its cap"
        );
        let held_b = ready(limiter.acquire(&b))
            .await
            .expect("b gets a free slot at once");
        assert_eq!(limiter.in_use(), 3);
        drop(held_b);
        drop(held_a);
        assert_eq!(limiter.in_use(), 0);
        assert!(
            limiter.lock().tenants.is_empty(),
            "idle tenants are forgotten"
        );
    }

    #[tokio::test]
    async fn released_slots_go_round_robin_not_to_the_longest_queue() {
        let limiter = FairLimiter::new(2, 2);
        let (a, b) = (tenant("a"), tenant("b"));
        let first = limiter.acquire(&a).await;
        let second = limiter.acquire(&a).await;
        // a queues ten more, then b one.
        let mut a_waiting = Vec::new();
        for _ in 0..10 {
            let limiter = limiter.clone();
            let a = a.clone();
            a_waiting.push(tokio::spawn(async move { limiter.acquire(&a).await }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut b_waiting = {
            let limiter = limiter.clone();
            let b = b.clone();
            tokio::spawn(async move { limiter.acquire(&b).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        // a was first in turn: the first release goes to a, the next to b, not to
        // the nine probes a still has waiting.
        drop(first);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(ready(&mut b_waiting).await.is_none(), "a's turn first");
        drop(second);
        let b_permit = tokio::time::timeout(Duration::from_secs(5), b_waiting)
            .await
            .expect("b is served by the second release")
            .expect("task");
        assert_eq!(&*b_permit.tenant, "b");
        assert_eq!(
            a_waiting.iter().filter(|task| task.is_finished()).count(),
            1,
            "one of a's waiting probes got a slot"
        );
        drop(b_permit);
        for task in a_waiting {
            drop(task.await.expect("every waiter of a is served in the end"));
        }
        assert_eq!(limiter.in_use(), 0);
    }

    #[tokio::test]
    async fn an_aborted_waiter_neither_holds_nor_blocks_a_slot() {
        let limiter = FairLimiter::new(1, 1);
        let a = tenant("a");
        let held = limiter.acquire(&a).await;
        let aborted = {
            let limiter = limiter.clone();
            let a = a.clone();
            tokio::spawn(async move { limiter.acquire(&a).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        aborted.abort();
        let _ = aborted.await;
        drop(held);
        let again = tokio::time::timeout(Duration::from_secs(5), limiter.acquire(&a))
            .await
            .expect("the aborted waiter's place does not hold the slot");
        assert_eq!(limiter.in_use(), 1);
        drop(again);
        assert_eq!(limiter.in_use(), 0);
    }
}
