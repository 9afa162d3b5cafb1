use super::*;
use std::{
    fmt,
    pin::Pin,
    task::{Poll, Waker},
};

/// Waits until `duration` has elapsed.
pub fn sleep(duration: Duration) -> Sleep {
    let handle = TimeHandle::current();
    handle.sleep(duration)
}

/// Waits until `deadline` is reached.
pub fn sleep_until(deadline: Instant) -> Sleep {
    let handle = TimeHandle::current();
    handle.sleep_until(deadline)
}

/// Future returned by [`sleep`] and [`sleep_until`].
///
/// [`sleep`]: sleep()
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Sleep {
    pub(super) handle: TimeHandle,
    pub(super) deadline: Instant,
    /// KARST-PATCH: the timer an earlier poll registered, for which deadline, and the slot
    /// holding the waker it will wake. Later polls at the same deadline only update the
    /// waker, instead of adding one more timer per poll; dropping the `Sleep` empties the
    /// slot, so its timer, which cannot be removed, wakes nobody.
    pub(super) registered: Option<(Instant, Arc<Mutex<Option<Waker>>>)>,
}

impl Sleep {
    /// Returns the instant at which the future will complete.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Returns `true` if `Sleep` has elapsed.
    ///
    /// A `Sleep` instance is elapsed when the requested duration has elapsed.
    pub fn is_elapsed(&self) -> bool {
        self.handle.clock.now_instant() >= self.deadline
    }

    /// Resets the `Sleep` instance to a new deadline.
    pub fn reset(mut self: Pin<&mut Self>, deadline: Instant) {
        self.deadline = deadline;
    }

    /// KARST-PATCH: the timer's waker slot is emptied, so a timer registered for an earlier
    /// deadline (reset) or by a dropped `Sleep` does not wake the task.
    fn disarm(&mut self) {
        if let Some((_, slot)) = self.registered.take() {
            slot.lock().take();
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.is_elapsed() {
            this.disarm();
            return Poll::Ready(());
        }
        // KARST-PATCH: one timer per deadline, not one per poll.
        if let Some((deadline, slot)) = &this.registered {
            if *deadline == this.deadline {
                let mut waker = slot.lock();
                if let Some(waker) = waker.as_mut() {
                    if !waker.will_wake(cx.waker()) {
                        *waker = cx.waker().clone();
                    }
                    return Poll::Pending;
                }
            }
        }
        this.disarm();
        let slot = Arc::new(Mutex::new(Some(cx.waker().clone())));
        let fired = slot.clone();
        this.handle.add_timer_at(this.deadline, move || {
            if let Some(waker) = fired.lock().take() {
                waker.wake();
            }
        });
        this.registered = Some((this.deadline, slot));
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.disarm();
    }
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .finish()
    }
}
