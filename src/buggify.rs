//! BUGGIFY: named fault points in production code that make rare paths common under simulation.
//!
//! Contract:
//! - In a production build (without `--cfg madsim`) every function here is a constant: `fires`
//!   is `false`, `delay` does nothing, `shorten` returns its argument, `short_reads` returns
//!   its stream, `injected_read_limit` returns the high watermark. Nothing random, nothing
//!   global, nothing to configure.
//! - In the simulation build, nothing fires until the simulator calls [`enable`] for a run
//!   with the run's seed and the fault points the seed turned on (FoundationDB's rule: each
//!   point is enabled or not for the whole run; an enabled point then fires on a visit with
//!   its [`FaultPoint::fire_probability`]). The draws come from one SplitMix64 stream seeded by
//!   the run's seed, visited in madsim's deterministic task order, so a replay of a seed makes
//!   the same draws and its trace stays byte-identical. The simulator runs one seed per
//!   process, so the state is process-global.
//! - Every firing is reported to the observer given to [`enable`] (the simulator traces it).
//! - Injected bugs ([`InjectedBug`]) exist only in the simulation build: they prove the
//!   simulator's checkers can fail. A production build cannot turn one on.
//!
//! A hook in other code is one line: `if crate::buggify::fires(FaultPoint::X) { ... }`,
//! `crate::buggify::delay(FaultPoint::X, max_ms).await`, or a wrapper call.

use std::time::Duration;

/// A named place in the code where the simulator may inject a rare event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultPoint {
    /// The runtime's fsync (a SyncJob under madsim) completes up to a few seconds late.
    SlowFsync,
    /// A client request times out long before `request.timeout.ms`.
    EarlyRequestTimeout,
    /// The runtime's connection reader receives only a few bytes per read (partial frames).
    ShortRead,
    /// The runtime's accept loop waits before serving a new connection.
    DelayedAccept,
    /// The runtime closes a client connection between two requests for no reason.
    SpuriousClose,
}

impl FaultPoint {
    pub const ALL: [FaultPoint; 5] = [
        FaultPoint::SlowFsync,
        FaultPoint::EarlyRequestTimeout,
        FaultPoint::ShortRead,
        FaultPoint::DelayedAccept,
        FaultPoint::SpuriousClose,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultPoint::SlowFsync => "slow-fsync",
            FaultPoint::EarlyRequestTimeout => "early-request-timeout",
            FaultPoint::ShortRead => "short-read",
            FaultPoint::DelayedAccept => "delayed-accept",
            FaultPoint::SpuriousClose => "spurious-close",
        }
    }

    pub fn from_name(name: &str) -> Option<FaultPoint> {
        Self::ALL.into_iter().find(|point| point.name() == name)
    }

    /// How often an enabled point fires per visit: points visited per request or per read
    /// fire rarely, so a run still makes progress.
    pub fn fire_probability(self) -> f64 {
        match self {
            FaultPoint::SlowFsync => 0.05,
            FaultPoint::EarlyRequestTimeout => 0.01,
            FaultPoint::ShortRead => 0.05,
            FaultPoint::DelayedAccept => 0.2,
            FaultPoint::SpuriousClose => 0.005,
        }
    }
}

/// A deliberately wrong behaviour, to show the simulator's checkers catch it (simulation
/// build only: see [`inject_bug`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectedBug {
    /// The broker reports the high watermark as usual but serves fetches up to the log end
    /// offset (under the durable flush policy: records not yet fsynced).
    ServeAboveHighWatermark,
}

/// The longest a `SlowFsync` delays a sync completion.
pub const SLOW_FSYNC_MAX_MS: u64 = 3_000;
/// The longest a `DelayedAccept` holds a new connection.
pub const DELAYED_ACCEPT_MAX_MS: u64 = 1_000;
/// The most bytes one read returns while `ShortRead` fires.
pub const SHORT_READ_MAX_BYTES: usize = 7;

#[cfg(not(madsim))]
mod imp {
    use super::FaultPoint;
    use std::time::Duration;

    /// Always false in a production build.
    #[inline(always)]
    pub fn fires(_point: FaultPoint) -> bool {
        false
    }

    /// Does nothing in a production build.
    #[inline(always)]
    pub async fn delay(_point: FaultPoint, _max_ms: u64) {}

    /// The timeout unchanged in a production build.
    #[inline(always)]
    pub fn shorten(_point: FaultPoint, timeout: Duration) -> Duration {
        timeout
    }

    /// The stream itself in a production build.
    #[inline(always)]
    pub fn short_reads<R>(stream: R) -> R {
        stream
    }

    /// The high watermark in a production build: injected bugs do not exist here.
    #[inline(always)]
    pub fn injected_read_limit(high_watermark: i64, _log_end_offset: i64) -> i64 {
        high_watermark
    }
}

#[cfg(madsim)]
mod imp {
    use super::{FaultPoint, InjectedBug, SHORT_READ_MAX_BYTES};
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};
    use std::time::Duration;
    use tokio::io::{AsyncRead, ReadBuf};

    /// Told of every firing (the simulator traces it).
    pub type Observer = Arc<dyn Fn(FaultPoint) + Send + Sync>;

    struct State {
        enabled: Vec<FaultPoint>,
        rng: u64,
        observer: Option<Observer>,
        bug: Option<InjectedBug>,
    }

    static STATE: Mutex<State> = Mutex::new(State {
        enabled: Vec::new(),
        rng: 0,
        observer: None,
        bug: None,
    });

    fn state() -> std::sync::MutexGuard<'static, State> {
        STATE
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn next(state: &mut State) -> u64 {
        state.rng = state.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Enables `points` for this run, seeding the draws with `seed`; `observer` hears every
    /// firing. Replaces any earlier configuration.
    pub fn enable(seed: u64, points: &[FaultPoint], observer: Option<Observer>) {
        let mut state = state();
        state.enabled = points.to_vec();
        state.rng = seed ^ (0xb0 << 56);
        state.observer = observer;
    }

    /// Turns every point off (and forgets the observer).
    pub fn disable() {
        let mut state = state();
        state.enabled.clear();
        state.observer = None;
    }

    /// Turns the injected bug on for this process (None: off).
    pub fn inject_bug(bug: Option<InjectedBug>) {
        state().bug = bug;
    }

    pub fn bug_injected(bug: InjectedBug) -> bool {
        state().bug == Some(bug)
    }

    /// Whether `point` fires on this visit: only if enabled for the run, then with its
    /// probability. A disabled point draws nothing, so enabling one point does not shift the
    /// draws of a run where it never is visited.
    pub fn fires(point: FaultPoint) -> bool {
        let observer = {
            let mut state = state();
            if !state.enabled.contains(&point) {
                return false;
            }
            let unit = (next(&mut state) >> 11) as f64 / (1u64 << 53) as f64;
            if unit >= point.fire_probability() {
                return false;
            }
            state.observer.clone()
        };
        if let Some(observer) = observer {
            observer(point);
        }
        true
    }

    /// A draw uniform in `1..=max` (for the size of an injected event).
    fn between_one_and(max: u64) -> u64 {
        let mut state = state();
        1 + ((next(&mut state) as u128 * max.max(1) as u128) >> 64) as u64
    }

    /// If `point` fires, sleeps a random 1..=`max_ms` of (simulated) time.
    pub async fn delay(point: FaultPoint, max_ms: u64) {
        if fires(point) {
            tokio::time::sleep(Duration::from_millis(between_one_and(max_ms))).await;
        }
    }

    /// If `point` fires, a random 1-50 % of `timeout`; else `timeout`.
    pub fn shorten(point: FaultPoint, timeout: Duration) -> Duration {
        if fires(point) {
            timeout * between_one_and(50) as u32 / 100
        } else {
            timeout
        }
    }

    /// `stream`, except that a read on which `ShortRead` fires returns at most a few bytes.
    pub fn short_reads<R: AsyncRead + Unpin>(stream: R) -> ShortReads<R> {
        ShortReads(stream)
    }

    pub struct ShortReads<R>(R);

    impl<R: AsyncRead + Unpin> AsyncRead for ShortReads<R> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            if buf.remaining() > SHORT_READ_MAX_BYTES && fires(FaultPoint::ShortRead) {
                let mut small = [0u8; SHORT_READ_MAX_BYTES];
                let wanted = between_one_and(SHORT_READ_MAX_BYTES as u64) as usize;
                let mut small = ReadBuf::new(&mut small[..wanted]);
                let poll = Pin::new(&mut self.0).poll_read(cx, &mut small);
                if let Poll::Ready(Ok(())) = &poll {
                    buf.put_slice(small.filled());
                }
                return poll;
            }
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    /// Under the injected bug `ServeAboveHighWatermark`, the log end offset; else the high
    /// watermark.
    pub fn injected_read_limit(high_watermark: i64, log_end_offset: i64) -> i64 {
        if bug_injected(InjectedBug::ServeAboveHighWatermark) {
            log_end_offset
        } else {
            high_watermark
        }
    }
}

pub use imp::*;

/// `timeout` as a client request timeout: shortened when `EarlyRequestTimeout` fires.
#[inline(always)]
pub fn request_timeout(timeout: Duration) -> Duration {
    shorten(FaultPoint::EarlyRequestTimeout, timeout)
}

/// The runtime's sync completion (simulation build): late by up to `SLOW_FSYNC_MAX_MS`
/// when `SlowFsync` fires.
#[inline(always)]
pub async fn slow_fsync() {
    delay(FaultPoint::SlowFsync, SLOW_FSYNC_MAX_MS).await
}

/// The runtime's accept loop: holds a new connection up to `DELAYED_ACCEPT_MAX_MS` when
/// `DelayedAccept` fires.
#[inline(always)]
pub async fn delayed_accept() {
    delay(FaultPoint::DelayedAccept, DELAYED_ACCEPT_MAX_MS).await
}

/// The runtime's connection reader: true when it should close the connection now.
#[inline(always)]
pub fn spurious_close() -> bool {
    fires(FaultPoint::SpuriousClose)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_distinct() {
        for point in FaultPoint::ALL {
            assert_eq!(FaultPoint::from_name(point.name()), Some(point));
            assert!(point.fire_probability() > 0.0 && point.fire_probability() < 0.5);
        }
        let names: std::collections::BTreeSet<_> =
            FaultPoint::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(names.len(), FaultPoint::ALL.len());
    }

    /// A production build never fires, whatever is visited.
    #[cfg(not(madsim))]
    #[test]
    fn production_build_never_fires_and_changes_nothing() {
        for point in FaultPoint::ALL {
            assert!((0..10_000).all(|_| !fires(point)));
            assert_eq!(
                shorten(point, Duration::from_secs(3)),
                Duration::from_secs(3)
            );
        }
        assert_eq!(injected_read_limit(5, 9), 5);
        assert_eq!(short_reads(7u8), 7u8);
    }
}
