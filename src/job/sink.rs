//! Where a job's results go. A sink takes each batch in input order; several sinks take the
//! same batch as a tuple (`(writer, organizer, store)`), an absent one as `None`.

use super::{JobError, Progress};

/// Takes a run's results, a batch at a time, in input order.
pub trait Sink<R> {
    /// Handles one batch. An error stops the run; a problem with one input should be
    /// reported through `progress` (and counted) instead.
    fn write(&mut self, batch: &[R], progress: &dyn Progress) -> Result<(), JobError>;

    /// Inputs this sink failed to handle (reported through `progress` as they failed); the
    /// run counts them with its failures.
    fn failed(&self) -> usize {
        0
    }
}

/// No sink: the results go nowhere.
impl<R> Sink<R> for () {
    fn write(&mut self, _: &[R], _: &dyn Progress) -> Result<(), JobError> {
        Ok(())
    }
}

impl<R, S: Sink<R> + ?Sized> Sink<R> for &mut S {
    fn write(&mut self, batch: &[R], progress: &dyn Progress) -> Result<(), JobError> {
        (**self).write(batch, progress)
    }
    fn failed(&self) -> usize {
        (**self).failed()
    }
}

impl<R, S: Sink<R> + ?Sized> Sink<R> for Box<S> {
    fn write(&mut self, batch: &[R], progress: &dyn Progress) -> Result<(), JobError> {
        (**self).write(batch, progress)
    }
    fn failed(&self) -> usize {
        (**self).failed()
    }
}

impl<R, S: Sink<R>> Sink<R> for Option<S> {
    fn write(&mut self, batch: &[R], progress: &dyn Progress) -> Result<(), JobError> {
        match self {
            Some(sink) => sink.write(batch, progress),
            None => Ok(()),
        }
    }
    fn failed(&self) -> usize {
        self.as_ref().map_or(0, Sink::failed)
    }
}

impl<R, A: Sink<R>, B: Sink<R>> Sink<R> for (A, B) {
    fn write(&mut self, batch: &[R], progress: &dyn Progress) -> Result<(), JobError> {
        self.0.write(batch, progress)?;
        self.1.write(batch, progress)
    }
    fn failed(&self) -> usize {
        self.0.failed() + self.1.failed()
    }
}

impl<R, A: Sink<R>, B: Sink<R>, C: Sink<R>> Sink<R> for (A, B, C) {
    fn write(&mut self, batch: &[R], progress: &dyn Progress) -> Result<(), JobError> {
        self.0.write(batch, progress)?;
        self.1.write(batch, progress)?;
        self.2.write(batch, progress)
    }
    fn failed(&self) -> usize {
        self.0.failed() + self.1.failed() + self.2.failed()
    }
}

impl<R, A: Sink<R>, B: Sink<R>, C: Sink<R>, D: Sink<R>> Sink<R> for (A, B, C, D) {
    fn write(&mut self, batch: &[R], progress: &dyn Progress) -> Result<(), JobError> {
        self.0.write(batch, progress)?;
        self.1.write(batch, progress)?;
        self.2.write(batch, progress)?;
        self.3.write(batch, progress)
    }
    fn failed(&self) -> usize {
        self.0.failed() + self.1.failed() + self.2.failed() + self.3.failed()
    }
}

/// A closure as a sink: `SinkFn(|batch, progress| ...)`.
pub struct SinkFn<F>(pub F);

impl<R, F> Sink<R> for SinkFn<F>
where
    F: FnMut(&[R], &dyn Progress) -> Result<(), JobError>,
{
    fn write(&mut self, batch: &[R], progress: &dyn Progress) -> Result<(), JobError> {
        (self.0)(batch, progress)
    }
}
