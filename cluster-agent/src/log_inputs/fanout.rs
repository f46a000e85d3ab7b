//! One reader feeding every pipeline that takes an input, with read positions
//! committed only behind the acknowledgements, and a consumer that stops acknowledging
//! moved onto a reader of its own so that it cannot stop the others.
//!
//! ## Lanes
//! A *lane* is a [`LogReader`] with the consumers it feeds. The *shared* lane feeds
//! every consumer that keeps up; each *detached* lane feeds one consumer that fell
//! behind. Each batch a lane reads is offered to each of its consumers; its ticket is
//! committed once every one of them has completed its [`BatchAck`] (durable, dropped
//! by its policy and counted, or not taken). So a lane's committed position is never
//! ahead of any of its consumers' durable records, and it is persisted only after
//! the commit.
//!
//! ## Detaching
//! A reader holds a bounded number of uncommitted reads and then stops reading, so one
//! consumer that never acknowledges (a dead backend behind a blocking buffer) would
//! stop its lane. A consumer of the shared lane with [`FanOutConfig::max_lag_batches`]
//! batches outstanding (and at least one other consumer in the lane) is detached:
//!
//! 1. the shared reader's committed position, which is at or before everything the
//!    consumer has not acknowledged, is written to the consumer's position file
//!    (`<detached_dir>/<consumer>.position`);
//! 2. a sibling reader opens from that file: the consumer's own lane;
//! 3. the consumer leaves the shared lane's outstanding batches, which commit as soon
//!    as the others have acknowledged them.
//!
//! The consumer sees the records after that position again from its own lane (the
//! duplicates are bounded by what the shared lane had read past its commit); the
//! acknowledgements it still sends for the shared lane's batches are ignored. Its own
//! lane stops reading when its reader's window is full, which bounds what a hung
//! consumer holds, and goes on when it acknowledges again.
//!
//! ## Rejoining
//! When a detached lane and the shared lane are both caught up (nothing unread,
//! nothing uncommitted) at the same committed position, the consumer goes back to the
//! shared lane and its position file is deleted. The check runs every
//! [`REJOIN_CHECK_EVERY`] rounds, right after the lanes read and took their
//! acknowledgements, so on a node whose files never stop growing it succeeds in a
//! round where no line arrived between the two lanes' reads.
//!
//! ## Costs of a detached lane
//! Each lane's reader has its own bounds: a detached tailer holds up to its
//! open-descriptor bound and its window of uncommitted batches, so the descriptors
//! and memory of an input grow with the number of detached consumers, never with
//! how long they hang. A consumer that stays behind longer than the node keeps its
//! logs can lose what is deleted unread: files deleted while its tailer had no
//! descriptor open on them (counted in that tailer's `lost_files`), journal files
//! vacuumed by journald. The shared lane is unaffected.
//!
//! ## Crash behaviour
//! Position files are written before the shared lane commits past them, so after
//! `kill -9` each consumer resumes from the shared reader's file or, if it was
//! detached, from its own: nothing committed is lost for any consumer, and what is
//! read again is bounded by each lane's uncommitted window. [`FanOut::open`] reopens
//! detached consumers from their files (rejoining at once those at the shared
//! position) and deletes the files of consumers that no longer exist.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};

use super::consumer::{AckMessage, BatchAck, LogConsumer, Outcome};
use super::reader::{InputError, LogReader};

/// Outstanding batches after which a shared-lane consumer is detached: a quarter of
/// the file tailer's 64-batch window (`kaas_logfiles::DEFAULT_MAX_UNACKED_BATCHES`),
/// so a consumer is detached long before the shared reader would stop for everyone,
/// and at 250 ms polls a consumer is given a few seconds of silence before it is.
pub const DEFAULT_MAX_LAG_BATCHES: usize = 16;

/// Rounds between rejoin checks: at the tailer's 250 ms poll, every second. A check
/// compares two in-memory positions, cheap enough; checking right after the lanes
/// read (not every round) leaves the comparison's cost out of most rounds.
pub const REJOIN_CHECK_EVERY: u64 = 4;

/// Suffix of a detached consumer's position file.
const POSITION_SUFFIX: &str = ".position";

/// Longest consumer name: pipeline names are DNS labels.
const MAX_CONSUMER_NAME: usize = 63;

/// How the fan-out detaches consumers and where it keeps their positions.
#[derive(Debug, Clone)]
pub struct FanOutConfig {
    /// See [`DEFAULT_MAX_LAG_BATCHES`]; lowered below the reader's window
    /// ([`LogReader::max_uncommitted`]) when it is not.
    pub max_lag_batches: usize,
    /// Where detached consumers' position files live: a directory of the input's own
    /// in the agent's data directory.
    pub detached_dir: PathBuf,
}

impl FanOutConfig {
    /// The defaults, with position files in `detached_dir`.
    pub fn new(detached_dir: PathBuf) -> Self {
        Self {
            max_lag_batches: DEFAULT_MAX_LAG_BATCHES,
            detached_dir,
        }
    }
}

/// One consumer's state, for telemetry and health.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerStatus {
    /// The consumer's name.
    pub name: String,
    /// Whether it reads on a lane of its own now.
    pub detached: bool,
    /// Batches offered and not acknowledged.
    pub outstanding: usize,
    /// Batches offered.
    pub batches_offered: u64,
    /// Records offered.
    pub records_offered: u64,
    /// Records its policy dropped (reported through [`Outcome::Dropped`]).
    pub records_dropped: u64,
    /// Times it was detached.
    pub detachments: u64,
    /// Times it rejoined the shared lane.
    pub rejoins: u64,
}

/// What one round did.
#[derive(Debug, Default)]
pub struct Round {
    /// Records read, over all lanes.
    pub records_read: usize,
    /// Whether a lane read records and stopped at its reader's size bound with more
    /// ready ([`LogReader::more_to_read`]): the next round may start at once.
    pub more: bool,
    /// Problems of this round (a lane's failed read or persist); the other lanes went
    /// on.
    pub errors: Vec<InputError>,
}

/// A batch waiting for its consumers.
struct Pending<T> {
    ticket: T,
    waiting: Vec<usize>,
}

/// A reader and the consumers it feeds.
struct Lane<R: LogReader> {
    id: u64,
    reader: R,
    members: Vec<usize>,
    pending: BTreeMap<u64, Pending<R::Ticket>>,
    next_batch: u64,
}

impl<R: LogReader> Lane<R> {
    fn new(id: u64, reader: R, members: Vec<usize>) -> Self {
        Self {
            id,
            reader,
            members,
            pending: BTreeMap::new(),
            next_batch: 0,
        }
    }

    /// Batches `consumer` has not acknowledged.
    fn outstanding(&self, consumer: usize) -> usize {
        self.pending
            .values()
            .filter(|p| p.waiting.contains(&consumer))
            .count()
    }

    /// Takes `consumer` off batch `batch`; commits it when nobody waits any more.
    /// Whether the consumer was waiting for it.
    fn release(&mut self, batch: u64, consumer: usize) -> bool {
        let Some(pending) = self.pending.get_mut(&batch) else {
            return false;
        };
        let Some(index) = pending.waiting.iter().position(|c| *c == consumer) else {
            return false;
        };
        pending.waiting.swap_remove(index);
        if pending.waiting.is_empty()
            && let Some(done) = self.pending.remove(&batch)
        {
            self.reader.commit(done.ticket);
        }
        true
    }

    fn idle(&self) -> bool {
        self.pending.is_empty() && self.reader.caught_up()
    }
}

/// One consumer and its counters.
struct Slot {
    consumer: Arc<dyn LogConsumer>,
    status: ConsumerStatus,
}

/// One input read once for every consumer; see the module notes. Driven by
/// [`FanOut::round`], on a thread of its own (reads are blocking file I/O).
pub struct FanOut<R: LogReader> {
    config: FanOutConfig,
    shared: Lane<R>,
    detached: Vec<Lane<R>>,
    slots: Vec<Slot>,
    acks: Receiver<AckMessage>,
    sender: Sender<AckMessage>,
    next_lane: u64,
    rounds: u64,
}

impl<R: LogReader> FanOut<R> {
    /// Starts the fan-out over `reader` (the shared lane, at its own persisted
    /// position): consumers with a position file in `config.detached_dir` resume on a
    /// lane of their own (or rejoin the shared lane at once when they are at its
    /// position), the others read from the shared lane, and position files of
    /// consumers not given are deleted.
    pub fn open(
        config: FanOutConfig,
        reader: R,
        consumers: Vec<Arc<dyn LogConsumer>>,
    ) -> Result<Self, InputError> {
        for (index, consumer) in consumers.iter().enumerate() {
            check_name(consumer.name())?;
            if consumers[..index]
                .iter()
                .any(|c| c.name() == consumer.name())
            {
                return Err(InputError::DuplicateConsumer {
                    name: consumer.name().to_owned(),
                });
            }
        }
        let mut config = config;
        // Below the reader's window, or the shared reader would stop before anybody
        // is detached.
        config.max_lag_batches = config
            .max_lag_batches
            .min(reader.max_uncommitted().saturating_sub(1))
            .max(1);
        let position_io = |path: &Path, source| InputError::Position {
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(&config.detached_dir)
            .map_err(|e| position_io(&config.detached_dir, e))?;
        remove_unknown_positions(&config.detached_dir, &consumers)?;
        let (sender, acks) = channel();
        let mut fan_out = Self {
            shared: Lane::new(0, reader, Vec::new()),
            detached: Vec::new(),
            slots: Vec::new(),
            acks,
            sender,
            next_lane: 1,
            rounds: 0,
            config,
        };
        for (index, consumer) in consumers.into_iter().enumerate() {
            let position = fan_out.position_file(consumer.name());
            fan_out.slots.push(Slot {
                status: ConsumerStatus {
                    name: consumer.name().to_owned(),
                    ..ConsumerStatus::default()
                },
                consumer,
            });
            if !position.exists() {
                fan_out.shared.members.push(index);
                continue;
            }
            let mut own = fan_out.shared.reader.open_sibling(&position)?;
            if fan_out.shared.reader.same_position(&mut own)? {
                drop(own);
                std::fs::remove_file(&position).map_err(|e| position_io(&position, e))?;
                fan_out.shared.members.push(index);
            } else {
                fan_out.slots[index].status.detached = true;
                let id = fan_out.take_lane_id();
                fan_out.detached.push(Lane::new(id, own, vec![index]));
            }
        }
        Ok(fan_out)
    }

    /// One round: takes the acknowledgements that arrived (committing what they
    /// complete), detaches consumers that fell behind, rejoins caught-up ones, reads
    /// once on every lane and offers what was read, and persists each lane's
    /// committed position. Call it every poll interval of the reader.
    pub fn round(&mut self) -> Round {
        let mut round = Round::default();
        self.rounds += 1;
        self.take_acks();
        if let Err(error) = self.detach_laggards() {
            round.errors.push(error);
        }
        let Self {
            shared,
            detached,
            slots,
            sender,
            ..
        } = self;
        for lane in std::iter::once(shared).chain(detached.iter_mut()) {
            match read_and_offer(lane, slots, sender) {
                Ok(records) => {
                    round.records_read += records;
                    round.more |= records > 0 && lane.reader.more_to_read();
                }
                Err(error) => round.errors.push(error),
            }
        }
        // Consumers that completed during the offer are committed in this round.
        self.take_acks();
        // Right after every lane read and committed: the moment lanes that keep up
        // are most likely at the same position.
        if self.rounds.is_multiple_of(REJOIN_CHECK_EVERY)
            && let Err(error) = self.rejoin_caught_up()
        {
            round.errors.push(error);
        }
        for lane in std::iter::once(&mut self.shared).chain(self.detached.iter_mut()) {
            if let Err(error) = lane.reader.persist() {
                round.errors.push(error);
            }
        }
        round
    }

    /// The shared lane's reader, for its counters and discovery status.
    pub fn reader(&self) -> &R {
        &self.shared.reader
    }

    /// Each consumer's state, in the order given to [`FanOut::open`].
    pub fn consumers(&self) -> Vec<ConsumerStatus> {
        self.slots
            .iter()
            .enumerate()
            .map(|(index, slot)| ConsumerStatus {
                outstanding: std::iter::once(&self.shared)
                    .chain(&self.detached)
                    .map(|lane| lane.outstanding(index))
                    .sum(),
                ..slot.status.clone()
            })
            .collect()
    }

    fn take_lane_id(&mut self) -> u64 {
        self.next_lane += 1;
        self.next_lane - 1
    }

    fn position_file(&self, name: &str) -> PathBuf {
        self.config
            .detached_dir
            .join(format!("{name}{POSITION_SUFFIX}"))
    }

    fn take_acks(&mut self) {
        while let Ok(message) = self.acks.try_recv() {
            let lane = if message.lane == self.shared.id {
                Some(&mut self.shared)
            } else {
                self.detached
                    .iter_mut()
                    .find(|lane| lane.id == message.lane)
            };
            let Some(lane) = lane else {
                continue;
            };
            if !lane.release(message.batch, message.consumer) {
                continue;
            }
            if let (Outcome::Dropped { records }, Some(slot)) =
                (message.outcome, self.slots.get_mut(message.consumer))
            {
                slot.status.records_dropped += records;
            }
        }
    }

    /// Detaches every shared-lane consumer with too many outstanding batches, as
    /// long as another consumer stays (a lone consumer gains nothing from a lane of
    /// its own).
    fn detach_laggards(&mut self) -> Result<(), InputError> {
        while self.shared.members.len() > 1 {
            let Some(&consumer) = self
                .shared
                .members
                .iter()
                .find(|c| self.shared.outstanding(**c) >= self.config.max_lag_batches)
            else {
                return Ok(());
            };
            let position = self.position_file(&self.slots[consumer].status.name);
            self.shared.reader.persist()?;
            self.shared.reader.save_position_as(&position)?;
            let own = self.shared.reader.open_sibling(&position)?;
            self.shared.members.retain(|c| *c != consumer);
            let batches: Vec<u64> = self.shared.pending.keys().copied().collect();
            for batch in batches {
                self.shared.release(batch, consumer);
            }
            let id = self.take_lane_id();
            self.detached.push(Lane::new(id, own, vec![consumer]));
            let status = &mut self.slots[consumer].status;
            status.detached = true;
            status.detachments += 1;
            tracing::warn!(
                consumer = %status.name,
                max_lag_batches = self.config.max_lag_batches,
                "a log pipeline stopped acknowledging; it reads on from a position of its own so the others go on"
            );
        }
        Ok(())
    }

    /// Moves detached consumers back to the shared lane when both are idle at the
    /// same position.
    fn rejoin_caught_up(&mut self) -> Result<(), InputError> {
        let mut index = 0;
        while index < self.detached.len() {
            if !(self.shared.idle() && self.detached[index].idle()) {
                index += 1;
                continue;
            }
            let lane = &mut self.detached[index];
            if !self.shared.reader.same_position(&mut lane.reader)? {
                index += 1;
                continue;
            }
            let lane = self.detached.swap_remove(index);
            for consumer in lane.members {
                let position = self.position_file(&self.slots[consumer].status.name);
                self.shared.members.push(consumer);
                let status = &mut self.slots[consumer].status;
                status.detached = false;
                status.rejoins += 1;
                std::fs::remove_file(&position).map_err(|source| InputError::Position {
                    path: position.clone(),
                    source,
                })?;
            }
        }
        Ok(())
    }
}

/// Reads once on `lane` and offers the batch to its consumers; a batch without
/// consumers is committed at once. Records read.
fn read_and_offer<R: LogReader>(
    lane: &mut Lane<R>,
    slots: &mut [Slot],
    sender: &Sender<AckMessage>,
) -> Result<usize, InputError> {
    let Some(read) = lane.reader.read()? else {
        return Ok(0);
    };
    let records = read.batch.records;
    if lane.members.is_empty() {
        lane.reader.commit(read.ticket);
        return Ok(records);
    }
    let batch_id = lane.next_batch;
    lane.next_batch += 1;
    lane.pending.insert(
        batch_id,
        Pending {
            ticket: read.ticket,
            waiting: lane.members.clone(),
        },
    );
    // The last consumer is handed the batch itself, so that once the others are done
    // with it, it can move the records it takes instead of copying them.
    let batches = std::iter::repeat_n(Arc::new(read.batch), lane.members.len());
    for (&consumer, batch) in lane.members.iter().zip(batches) {
        let slot = &mut slots[consumer];
        slot.status.batches_offered += 1;
        slot.status.records_offered += records as u64;
        let ack = BatchAck {
            message: AckMessage {
                lane: lane.id,
                batch: batch_id,
                consumer,
                outcome: Outcome::NotTaken,
            },
            sender: sender.clone(),
        };
        slot.consumer.offer(batch, ack);
    }
    Ok(records)
}

/// A consumer name is a DNS label, so it is a safe file name.
fn check_name(name: &str) -> Result<(), InputError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_CONSUMER_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(InputError::ConsumerName {
            name: name.to_owned(),
        })
    }
}

/// Deletes position files of consumers that are not among `consumers`.
fn remove_unknown_positions(
    dir: &Path,
    consumers: &[Arc<dyn LogConsumer>],
) -> Result<(), InputError> {
    let io = |source| InputError::Position {
        path: dir.to_path_buf(),
        source,
    };
    for dirent in std::fs::read_dir(dir).map_err(io)? {
        let path = dirent.map_err(io)?.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(POSITION_SUFFIX))
        else {
            continue;
        };
        if !consumers.iter().any(|c| c.name() == name) {
            std::fs::remove_file(&path).map_err(io)?;
        }
    }
    Ok(())
}
