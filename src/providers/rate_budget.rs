//! `rate_budget`: one rate-limit budget per BigCommerce store (API base URL + store hash), kept
//! for the whole process and shared by every provider that talks to that store (the storefront
//! token calls, the assisted providers' probes).
//!
//! BigCommerce gives a store one quota per window, shared by every client of the store, and says
//! on every answer how much is left (`X-Rate-Limit-Requests-Left`) and when the window refreshes
//! (`X-Rate-Limit-Time-Reset-Ms`). Many rotations in flight at once against one store would
//! otherwise all fire together and run into 429s. So a request starts only when the budget has
//! room for it: what the last answer said was left, less the requests still in flight (they may
//! not be counted in that answer yet); when few are left, their starts are spread over the rest
//! of the window; when none are, the request waits for the window to refresh. A 429 closes the
//! budget until the wait it names. Until a first answer tells the quota, only
//! [`UNKNOWN_IN_FLIGHT`] requests are in flight at once.
//!
//! Invariants: [`Budget`] is pure (the time is passed in). [`reserve`] never waits past the
//! call's deadline: a longer wait ends the call with [`ProviderError::Transient`] and that wait,
//! for the caller's retry to honour. It never spins: every wait is for an instant later than now,
//! or for an answer. A [`Permit`] dropped without an answer (transport error, timeout, a caller
//! that gave up) gives its place back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use reqwest::header::HeaderMap;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::ProviderError;

/// With this many requests or fewer left (after those in flight), starts are spread over the
/// rest of the window rather than sent at once.
pub const PACE_BELOW: u64 = 8;
/// Until an answer tells the quota, at most this many requests are in flight at once.
pub const UNKNOWN_IN_FLIGHT: u32 = 2;
/// Never believe a header asking for a longer wait than this (BigCommerce windows are 30 s).
pub const MAX_HEADER_WAIT: Duration = Duration::from_secs(60);
/// Two answers whose reset instants are closer than this belong to one window, while the
/// window's length is not known (when it is: half of it).
const SAME_WINDOW: Duration = Duration::from_secs(1);

/// The budget's key: the API base URL (without a trailing slash) and the store hash.
pub fn store_key(base_url: &str, store_hash: &str) -> String {
    format!("{}|{store_hash}", base_url.trim_end_matches('/'))
}

/// What the `X-Rate-Limit-*` / `Retry-After` headers of one answer say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateHeaders {
    pub left: Option<u64>,
    /// `X-Rate-Limit-Time-Reset-Ms`: how long until the quota refreshes.
    pub reset: Option<Duration>,
    pub quota: Option<u64>,
    pub window: Option<Duration>,
    /// `X-Retry-After` (or `Retry-After`), in whole seconds.
    pub retry_after: Option<Duration>,
}

impl RateHeaders {
    pub fn parse(h: &HeaderMap) -> RateHeaders {
        let num = |name: &str| -> Option<u64> { h.get(name)?.to_str().ok()?.trim().parse().ok() };
        RateHeaders {
            left: num("x-rate-limit-requests-left"),
            reset: num("x-rate-limit-time-reset-ms").map(Duration::from_millis),
            quota: num("x-rate-limit-requests-quota"),
            window: num("x-rate-limit-time-window-ms")
                .filter(|&ms| ms > 0)
                .map(Duration::from_millis),
            retry_after: num("x-retry-after")
                .or_else(|| num("retry-after"))
                .map(Duration::from_secs),
        }
    }

    /// How long a 429 tells us to wait; `None` when it says nothing (platform overload).
    pub fn retry_wait(&self) -> Option<Duration> {
        self.reset
            .or(self.retry_after)
            .map(|w| w.min(MAX_HEADER_WAIT))
    }
}

/// What a new request should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send now: the request is counted in flight.
    Go,
    /// Ask again at this instant (always later than the `now` asked at).
    WaitUntil(Instant),
    /// Ask again when an answer arrives (the quota is not known yet).
    WaitForAnswer,
}

/// What the answers so far said about the store's quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    /// No answer yet.
    Nothing,
    /// Answers came without rate-limit headers: no quota to keep to (a 429 still closes).
    Unmetered,
    /// `left` requests until `reset_at`, as of requests started at `since` or later.
    Metered {
        left: u64,
        reset_at: Instant,
        since: Instant,
    },
}

/// One store's budget. Pure: every call takes the current time.
#[derive(Debug, Clone)]
pub struct Budget {
    known: Known,
    quota: Option<u64>,
    window: Option<Duration>,
    /// Requests started and not answered yet.
    in_flight: u32,
    /// A 429 asked for no request before this instant.
    closed_until: Option<Instant>,
    last_start: Option<Instant>,
}

impl Default for Budget {
    fn default() -> Self {
        Budget::new()
    }
}

impl Budget {
    pub fn new() -> Budget {
        Budget {
            known: Known::Nothing,
            quota: None,
            window: None,
            in_flight: 0,
            closed_until: None,
            last_start: None,
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// Whether a request may start at `now`; [`Decision::Go`] counts it in flight.
    pub fn decide(&mut self, now: Instant) -> Decision {
        if let Some(until) = self.closed_until {
            if until > now {
                return Decision::WaitUntil(until);
            }
            self.closed_until = None;
        }
        match self.known {
            Known::Nothing if self.in_flight >= UNKNOWN_IN_FLIGHT => Decision::WaitForAnswer,
            Known::Nothing | Known::Unmetered => self.go(now),
            Known::Metered { left, reset_at, .. } => {
                let (left, reset_at) = if now >= reset_at {
                    // The window refreshed: a full quota until the next reset, as far as the
                    // headers told its size; otherwise start again as if nothing were known.
                    match (self.quota, self.window) {
                        (Some(quota), Some(window)) => {
                            self.known = Known::Metered {
                                left: quota,
                                reset_at: now + window,
                                since: now,
                            };
                            (quota, now + window)
                        }
                        _ => {
                            self.known = Known::Nothing;
                            return self.decide(now);
                        }
                    }
                } else {
                    (left, reset_at)
                };
                // Requests in flight may not be counted in `left` yet: keep them in reserve.
                let usable = left.saturating_sub(u64::from(self.in_flight));
                if usable == 0 {
                    return Decision::WaitUntil(reset_at);
                }
                if usable <= PACE_BELOW {
                    if let Some(last) = self.last_start {
                        // One slot per usable request over the rest of the window.
                        let spacing = (reset_at - now) / (usable as u32 + 1);
                        let slot = last + spacing;
                        if slot > now {
                            return Decision::WaitUntil(slot);
                        }
                    }
                }
                self.go(now)
            }
        }
    }

    fn go(&mut self, now: Instant) -> Decision {
        self.in_flight += 1;
        self.last_start = Some(now);
        Decision::Go
    }

    /// The answer to a request started at `started` arrived at `now`.
    pub fn answered(&mut self, now: Instant, started: Instant, status: u16, rate: &RateHeaders) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(quota) = rate.quota {
            self.quota = Some(quota);
        }
        if let Some(window) = rate.window {
            self.window = Some(window);
        }
        if status == 429 {
            // Without a wait it is platform overload: the caller backs off; nothing is closed.
            if let Some(wait) = rate.retry_wait() {
                let until = now + wait;
                self.closed_until = Some(self.closed_until.map_or(until, |c| c.max(until)));
                self.known = Known::Metered {
                    left: 0,
                    reset_at: until,
                    since: started,
                };
            }
            return;
        }
        let (Some(left_h), Some(reset_h)) = (rate.left, rate.reset) else {
            if self.known == Known::Nothing {
                self.known = Known::Unmetered;
            }
            return;
        };
        let reset_h = now + reset_h.min(MAX_HEADER_WAIT);
        let adopt = Known::Metered {
            left: left_h,
            reset_at: reset_h,
            since: started,
        };
        self.known = match self.known {
            Known::Metered {
                left,
                reset_at,
                since,
            } => {
                let tolerance = self.window.map_or(SAME_WINDOW, |w| w / 2);
                let apart = reset_h
                    .saturating_duration_since(reset_at)
                    .max(reset_at.saturating_duration_since(reset_h));
                if apart <= tolerance {
                    // The same window: answers arrive in any order, the lowest count is the
                    // latest; the latest reset instant is never before the store's (an answer
                    // arrives after the store counted it), an estimate may be.
                    Known::Metered {
                        left: left.min(left_h),
                        reset_at: reset_at.max(reset_h),
                        since,
                    }
                } else if reset_h > reset_at || started >= since {
                    // A later window, or a request sent after what we knew: it is the news.
                    adopt
                } else {
                    // An answer from a window that is over.
                    self.known
                }
            }
            Known::Nothing | Known::Unmetered => adopt,
        };
    }

    /// A request ended without an answer: its place is free again.
    pub fn dropped(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }
}

/// One store's budget in the process, the waiters for its answers, and what it cost them.
struct Entry {
    budget: Mutex<Budget>,
    answers: Notify,
    /// Requests that waited before they started (or gave up).
    waits: AtomicU64,
    waited_ms: AtomicU64,
    /// Calls ended with `Transient` because the wait would pass their deadline.
    gave_up: AtomicU64,
    /// Answers with status 429.
    limited: AtomicU64,
}

/// What one store's budget cost so far (for metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitStats {
    /// The budget's key ([`store_key`]): the API base URL and the store hash.
    pub key: String,
    /// Requests that waited for the budget before starting (or giving up).
    pub waits: u64,
    /// Their waits, added up.
    pub waited: Duration,
    /// Calls that ended with `Transient` because the wait would have passed their deadline.
    pub gave_up: u64,
    /// Answers with status 429 (the store's quota spent by someone else, or platform overload).
    pub limited: u64,
}

/// Every store budget of the process so far, with what it cost.
pub fn stats() -> Vec<WaitStats> {
    let all = budgets()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut out: Vec<WaitStats> = all
        .iter()
        .map(|(key, e)| WaitStats {
            key: key.clone(),
            waits: e.waits.load(Ordering::Relaxed),
            waited: Duration::from_millis(e.waited_ms.load(Ordering::Relaxed)),
            gave_up: e.gave_up.load(Ordering::Relaxed),
            limited: e.limited.load(Ordering::Relaxed),
        })
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

impl Entry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Budget> {
        // The budget is plain data updated in one step: a panic elsewhere leaves it usable.
        self.budget
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn budgets() -> &'static Mutex<HashMap<String, Arc<Entry>>> {
    static BUDGETS: OnceLock<Mutex<HashMap<String, Arc<Entry>>>> = OnceLock::new();
    BUDGETS.get_or_init(|| Mutex::new(HashMap::new()))
}

fn entry(key: &str) -> Arc<Entry> {
    let mut all = budgets()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    all.entry(key.to_string())
        .or_insert_with(|| {
            Arc::new(Entry {
                budget: Mutex::new(Budget::new()),
                answers: Notify::new(),
                waits: AtomicU64::new(0),
                waited_ms: AtomicU64::new(0),
                gave_up: AtomicU64::new(0),
                limited: AtomicU64::new(0),
            })
        })
        .clone()
}

/// A request counted in flight against a store's budget. Give it the answer with
/// [`Permit::answered`]; dropped without one, it frees its place.
pub struct Permit {
    entry: Arc<Entry>,
    started: Instant,
    released: bool,
}

impl Permit {
    /// Records the answer's status and headers in the budget; returns what the headers said.
    pub fn answered(mut self, status: u16, headers: &HeaderMap) -> RateHeaders {
        let rate = RateHeaders::parse(headers);
        if status == 429 {
            self.entry.limited.fetch_add(1, Ordering::Relaxed);
        }
        self.entry
            .lock()
            .answered(Instant::now(), self.started, status, &rate);
        self.released = true;
        self.entry.answers.notify_waiters();
        rate
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.released {
            self.entry.lock().dropped();
            self.entry.answers.notify_waiters();
        }
    }
}

/// Waits until the store's budget lets one more request start, within `deadline`. A wait that
/// would end past the deadline returns `Transient` at once with that wait (`what` names the call
/// in the reason).
pub async fn reserve(key: &str, deadline: Instant, what: &str) -> Result<Permit, ProviderError> {
    let entry = entry(key);
    let asked = Instant::now();
    let mut waited = false;
    let count_wait = |waited: bool| {
        if waited {
            entry.waits.fetch_add(1, Ordering::Relaxed);
            let ms = asked.elapsed().as_millis().try_into().unwrap_or(u64::MAX);
            entry.waited_ms.fetch_add(ms, Ordering::Relaxed);
        }
    };
    loop {
        // Registered before the decision, so that an answer between the two is not missed.
        let answer = entry.answers.notified();
        tokio::pin!(answer);
        answer.as_mut().enable();
        let now = Instant::now();
        let decision = entry.lock().decide(now);
        match decision {
            Decision::Go => {
                count_wait(waited);
                return Ok(Permit {
                    entry: Arc::clone(&entry),
                    started: now,
                    released: false,
                });
            }
            Decision::WaitUntil(until) if until > deadline => {
                count_wait(true);
                entry.gave_up.fetch_add(1, Ordering::Relaxed);
                return Err(ProviderError::Transient {
                    reason: format!(
                        "{what}: the store's rate limit allows no request before the call's deadline"
                    ),
                    retry_after: Some(until.saturating_duration_since(now)),
                });
            }
            Decision::WaitUntil(until) => {
                waited = true;
                tokio::time::sleep_until(until).await
            }
            Decision::WaitForAnswer => {
                waited = true;
                tokio::select! {
                    _ = answer => {}
                    _ = tokio::time::sleep_until(deadline) => {
                        count_wait(true);
                        entry.gave_up.fetch_add(1, Ordering::Relaxed);
                        return Err(ProviderError::Transient {
                            reason: format!(
                                "{what}: no answer from the store told its rate limit before the call's deadline"
                            ),
                            retry_after: None,
                        })
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    /// One step of a budget's life, at a time in ms after the start.
    #[derive(Debug, Clone, Copy)]
    enum Step {
        /// Ask at `at`; expect this.
        Ask(u64, Expect),
        /// The answer to the request started at `started` arrives at `at`.
        Answer {
            at: u64,
            started: u64,
            status: u16,
            rate: RateHeaders,
        },
        /// A request ends without an answer.
        Drop,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Expect {
        Go,
        /// Wait until this many ms after the start.
        Until(u64),
        ForAnswer,
    }

    /// The store's headers: quota 15 per 3 s window.
    fn rate(left: u64, reset_ms: u64) -> RateHeaders {
        RateHeaders {
            left: Some(left),
            reset: Some(Duration::from_millis(reset_ms)),
            quota: Some(15),
            window: Some(Duration::from_millis(3000)),
            retry_after: None,
        }
    }

    fn answer(at: u64, started: u64, left: u64, reset_ms: u64) -> Step {
        Step::Answer {
            at,
            started,
            status: 200,
            rate: rate(left, reset_ms),
        }
    }

    fn check(name: &str, steps: &[Step]) {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut b = Budget::new();
        for (i, step) in steps.iter().enumerate() {
            match *step {
                Step::Ask(ms, expect) => {
                    let got = match b.decide(at(ms)) {
                        Decision::Go => Expect::Go,
                        Decision::WaitUntil(t) => {
                            assert!(t > at(ms), "{name}: step {i}: a wait must be for later");
                            Expect::Until((t - t0).as_millis() as u64)
                        }
                        Decision::WaitForAnswer => Expect::ForAnswer,
                    };
                    assert_eq!(got, expect, "{name}: step {i} ({step:?})");
                }
                Step::Answer {
                    at: ms,
                    started,
                    status,
                    rate,
                } => b.answered(at(ms), at(started), status, &rate),
                Step::Drop => b.dropped(),
            }
        }
    }

    use Expect::{ForAnswer, Go, Until};
    use Step::Ask;

    #[test]
    fn the_budget_decides_go_or_wait() {
        let cases: &[(&str, &[Step])] = &[
            (
                "plenty left: go at once, however many are in flight",
                &[
                    answer(0, 0, 14, 3000),
                    Ask(10, Go),
                    Ask(10, Go),
                    Ask(10, Go),
                    Ask(10, Go),
                ],
            ),
            (
                "the answer said none left: wait for the window to refresh, then the full quota",
                &[
                    answer(0, 0, 0, 2000),
                    Ask(100, Until(2000)),
                    Ask(2000, Go),
                    Ask(2000, Go),
                ],
            ),
            (
                "requests in flight are kept in reserve: 1 left, 1 in flight, wait for the reset",
                &[
                    Ask(0, Go),
                    Ask(0, Go),
                    answer(10, 0, 1, 2990),
                    Ask(10, Until(3000)),
                ],
            ),
            (
                "a request that ended without an answer frees its place",
                &[
                    answer(0, 0, 1, 3000),
                    Ask(0, Go),
                    Ask(1000, Until(3000)),
                    Step::Drop,
                    Ask(1000, Go),
                ],
            ),
            (
                "answers out of order in one window: the lowest count holds",
                &[
                    answer(0, 0, 10, 3000),
                    answer(20, 5, 3, 2980),
                    answer(30, 6, 9, 2970),
                    // 3 left, then 1 in flight: 2 usable, one slot per third of the rest of the
                    // window, from the last start.
                    Ask(30, Go),
                    Ask(30, Until(30 + 2970 / 3)),
                ],
            ),
            (
                "in one window the latest reset instant holds (an estimate may be early)",
                &[
                    answer(0, 0, 0, 1000),
                    Ask(1000, Go), // the window refreshed: assumed to end at 4000
                    answer(1100, 1000, 0, 2950),
                    Ask(1100, Until(4050)),
                ],
            ),
            (
                "an answer from a window that is over is not news",
                &[
                    answer(0, 0, 0, 1000),
                    Ask(1000, Go), // the window refreshed: 15 assumed
                    answer(1001, 0, 0, 0),
                    Ask(1002, Go),
                    Ask(1002, Go),
                ],
            ),
            (
                "a request sent after the refresh tells how the new window really stands",
                &[
                    answer(0, 0, 0, 1000),
                    Ask(1000, Go),
                    answer(1010, 1000, 0, 200),
                    Ask(1020, Until(1210)),
                ],
            ),
        ];
        for (name, steps) in cases {
            check(name, steps);
        }
    }

    #[test]
    fn few_left_are_spread_over_the_rest_of_the_window() {
        check(
            "3 left, 2.4 s to go: the starts are spread so that the last one comes before the reset",
            &[
                answer(0, 0, 3, 2400),
                Ask(0, Go),
                answer(0, 0, 2, 2400),
                // 2 left: a slot a third of the 2.4 s after the last start.
                Ask(0, Until(800)),
                Ask(800, Go),
                answer(800, 800, 1, 1600),
                // 1 left: half of the 1.6 s to go.
                Ask(800, Until(1600)),
                Ask(1600, Go),
                answer(1600, 1600, 0, 800),
                Ask(1600, Until(2400)),
                Ask(2400, Go),
            ],
        );
        check(
            "more than PACE_BELOW left: no pacing",
            &[
                answer(0, 0, PACE_BELOW + 2, 2000),
                Ask(0, Go),
                Ask(0, Go),
                // PACE_BELOW usable now: paced.
                Ask(0, Until(2000 / (PACE_BELOW + 1))),
            ],
        );
    }

    #[test]
    fn a_429_closes_the_budget_until_the_store_says() {
        let limited = |reset_ms: Option<u64>, retry_s: Option<u64>| Step::Answer {
            at: 100,
            started: 0,
            status: 429,
            rate: RateHeaders {
                left: Some(0),
                reset: reset_ms.map(Duration::from_millis),
                quota: Some(15),
                window: Some(Duration::from_millis(3000)),
                retry_after: retry_s.map(Duration::from_secs),
            },
        };
        check(
            "the reset header",
            &[
                answer(0, 0, 10, 3000),
                Ask(50, Go),
                limited(Some(1500), Some(2)),
                Ask(200, Until(1600)),
                Ask(1600, Go),
            ],
        );
        check(
            "only Retry-After",
            &[Ask(0, Go), limited(None, Some(2)), Ask(200, Until(2100))],
        );
        check(
            "platform overload (no headers): nothing closes, the caller backs off",
            &[
                answer(0, 0, 10, 3000),
                Ask(50, Go),
                Step::Answer {
                    at: 100,
                    started: 50,
                    status: 429,
                    rate: RateHeaders::default(),
                },
                Ask(200, Go),
            ],
        );
        check(
            "a wait longer than a minute is cut to a minute",
            &[
                Ask(0, Go),
                limited(Some(600_000), None),
                Ask(1, Until(60_100)),
            ],
        );
    }

    #[test]
    fn an_unknown_budget_lets_few_in_flight_until_the_first_answer() {
        let cap: Vec<Step> = (0..UNKNOWN_IN_FLIGHT).map(|_| Ask(0, Go)).collect();
        let mut steps = cap.clone();
        steps.extend([Ask(0, ForAnswer), answer(10, 0, 14, 2990), Ask(10, Go)]);
        check("an answer with headers tells the quota", &steps);

        let mut steps = cap.clone();
        steps.extend([
            Ask(0, ForAnswer),
            Step::Drop,
            Ask(10, Go),
            Ask(10, ForAnswer),
        ]);
        check("a request without an answer frees its place", &steps);

        let mut steps = cap;
        steps.extend([
            Step::Answer {
                at: 10,
                started: 0,
                status: 200,
                rate: RateHeaders::default(),
            },
            Ask(10, Go),
            Ask(10, Go),
            Ask(10, Go),
        ]);
        check("answers without headers: no quota to keep to", &steps);

        check(
            "a refreshed window without a known quota starts unknown again",
            &[
                Ask(0, Go),
                Step::Answer {
                    at: 10,
                    started: 0,
                    status: 200,
                    rate: RateHeaders {
                        left: Some(0),
                        reset: Some(Duration::from_millis(1000)),
                        ..RateHeaders::default()
                    },
                },
                Ask(20, Until(1010)),
                Ask(1010, Go),
                Ask(1010, Go),
                Ask(1010, ForAnswer),
            ],
        );
    }

    #[test]
    fn rate_headers_say_how_long_to_wait() {
        // Response headers, then the expected `left` and 429 wait.
        type HeaderCase = (
            &'static [(&'static str, &'static str)],
            Option<u64>,
            Option<Duration>,
        );
        let cases: &[HeaderCase] = &[
            (
                &[
                    ("X-Rate-Limit-Requests-Left", "0"),
                    ("X-Rate-Limit-Time-Reset-Ms", "1500"),
                    ("X-Retry-After", "2"),
                ],
                Some(0),
                Some(Duration::from_millis(1500)),
            ),
            (
                &[("X-Retry-After", "2")],
                None,
                Some(Duration::from_secs(2)),
            ),
            (&[("Retry-After", "3")], None, Some(Duration::from_secs(3))),
            (
                &[("X-Rate-Limit-Time-Reset-Ms", "999999999")],
                None,
                Some(MAX_HEADER_WAIT),
            ),
            (&[], None, None),
            (&[("X-Rate-Limit-Time-Reset-Ms", "soon")], None, None),
        ];
        for (headers, left, wait) in cases {
            let r = RateHeaders::parse(&header_map(headers));
            assert_eq!(r.left, *left, "{headers:?}");
            assert_eq!(r.retry_wait(), *wait, "{headers:?}");
        }
        let all = RateHeaders::parse(&header_map(&[
            ("X-Rate-Limit-Requests-Quota", "150"),
            ("X-Rate-Limit-Time-Window-Ms", "30000"),
        ]));
        assert_eq!(all.quota, Some(150));
        assert_eq!(all.window, Some(Duration::from_secs(30)));
    }

    fn header_map(headers: &[(&str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_static(v),
            );
        }
        h
    }

    #[test]
    fn one_budget_per_store_and_api() {
        assert_eq!(
            store_key("https://api.bigcommerce.com/", "abc123"),
            store_key("https://api.bigcommerce.com", "abc123")
        );
        assert_ne!(
            store_key("https://api.bigcommerce.com", "abc123"),
            store_key("https://api.bigcommerce.com", "def456")
        );
    }

    /// A key no other test uses.
    fn fresh_key(name: &str) -> String {
        store_key("http://127.0.0.1:9/unit-test", name)
    }

    #[tokio::test]
    async fn a_permit_dropped_without_an_answer_lets_a_waiter_go() {
        let key = fresh_key("dropped");
        let deadline = Instant::now() + Duration::from_secs(30);
        let first = reserve(&key, deadline, "t").await.unwrap();
        let _second = reserve(&key, deadline, "t").await.unwrap();
        let waiter = tokio::spawn({
            let key = key.clone();
            async move { reserve(&key, deadline, "t").await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the quota is unknown: two at most");
        drop(first);
        waiter.await.unwrap().expect("the freed place is taken");
    }

    #[tokio::test]
    async fn a_wait_past_the_deadline_is_transient_with_the_wait() {
        let key = fresh_key("deadline");
        let permit = reserve(&key, Instant::now() + Duration::from_secs(1), "mint")
            .await
            .unwrap();
        permit.answered(
            429,
            &header_map(&[
                ("X-Rate-Limit-Requests-Left", "0"),
                ("X-Rate-Limit-Time-Reset-Ms", "400"),
            ]),
        );
        let start = Instant::now();
        match reserve(&key, start + Duration::from_millis(100), "mint").await {
            Err(ProviderError::Transient {
                retry_after: Some(w),
                reason,
            }) => {
                assert!(
                    w > Duration::from_millis(300) && w <= Duration::from_millis(400),
                    "{w:?}"
                );
                assert!(reason.starts_with("mint: "), "{reason}");
            }
            other => panic!("expected Transient with a wait, got {:?}", other.err()),
        }
        assert!(
            start.elapsed() < Duration::from_millis(100),
            "returned at once"
        );
        // Within a longer deadline it waits, then goes.
        reserve(&key, start + Duration::from_secs(10), "mint")
            .await
            .unwrap();
        assert!(start.elapsed() >= Duration::from_millis(300));
        let mine = stats().into_iter().find(|s| s.key == key).unwrap();
        assert_eq!(
            (mine.waits, mine.gave_up, mine.limited),
            (2, 1, 1),
            "{mine:?}"
        );
        assert!(mine.waited >= Duration::from_millis(300), "{mine:?}");
    }
}
