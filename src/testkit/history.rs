//! The model of what a workload was promised: the states of acknowledged commits, and which of
//! them a crash may bring back (DESIGN §4, §4.6).

use super::Model;

/// Acknowledged states, oldest first, each with whether it was durable; the state of the commit
/// in flight; and one that a failed call left in doubt.
#[derive(Debug, Clone)]
pub struct History {
    /// Acknowledged states and their durability. Never empty: the first is where the history
    /// starts (durable).
    pub acked: Vec<(Model, bool)>,
    /// The state of the commit whose call had not returned, or failed.
    pub in_flight: Option<Model>,
    /// Earlier commits made and not yet acknowledged, whose wait was still to come (staged
    /// durable commits, DESIGN §4.3): a crash may leave any of them too.
    pub pipelined: Vec<Model>,
    /// A commit whose call failed and that a process crash then forgot: until a write
    /// transaction settles the file (S2), a power loss may still bring it back.
    pub in_doubt: Option<Model>,
}

impl History {
    /// A history starting from `start`, durable.
    pub fn new(start: Model) -> History {
        History {
            acked: vec![(start, true)],
            in_flight: None,
            pipelined: Vec::new(),
            in_doubt: None,
        }
    }

    /// The latest acknowledged state.
    pub fn latest(&self) -> &Model {
        &self.acked.last().expect("never empty").0
    }

    /// A commit of `m` is being made.
    pub fn begin(&mut self, m: &Model) {
        self.in_flight = Some(m.clone());
    }

    /// A commit of `m` is being made while the one in flight is not acknowledged yet.
    pub fn begin_pipelined(&mut self, m: &Model) {
        self.pipelined.extend(self.in_flight.replace(m.clone()));
    }

    /// The commit of `m` returned `Ok`. (`in_flight` stays: it is that same state until the next
    /// commit begins.)
    pub fn acknowledge(&mut self, m: Model, durable: bool) {
        self.acked.push((m, durable));
    }

    /// A write transaction began (it settled the file, S2): nothing in doubt can return.
    pub fn settled(&mut self) {
        self.in_doubt = None;
    }

    /// Index of the first state a crash may recover: the last durable one after a power loss or
    /// a failure (S1), else the latest.
    fn floor(&self, from_durable: bool) -> usize {
        if from_durable {
            self.acked.iter().rposition(|a| a.1).expect("the first state is durable")
        } else {
            self.acked.len() - 1
        }
    }

    /// May a crash leave `got`? An acknowledged state from [`History::floor`] on, the commit in
    /// flight, or the one in doubt.
    pub fn acceptable(&self, got: &Model, from_durable: bool) -> bool {
        let from = self.floor(from_durable);
        self.acked[from..].iter().any(|a| a.0 == *got)
            || self.in_flight.as_ref() == Some(got)
            || self.pipelined.contains(got)
            || self.in_doubt.as_ref() == Some(got)
    }

    /// A crash (a power loss when `power`; `failed`: a failure was injected since the last one)
    /// recovered `got`, which [`History::acceptable`] allowed. The history continues from it: an
    /// acknowledged state keeps its durability; the one in flight counts as not durable (its
    /// sync may not have finished) unless a power loss just proved it durable.
    pub fn recovered(&mut self, got: Model, power: bool, failed: bool) {
        let from = self.floor(power || failed);
        self.pipelined.clear();
        if !power && failed && self.in_flight.as_ref() != Some(&got) {
            self.in_doubt = self.in_flight.take().or(self.in_doubt.take());
        } else if power {
            self.in_doubt = None;
        }
        match self.acked[from..].iter().rposition(|a| a.0 == got) {
            Some(i) => self.acked.truncate(from + i + 1),
            None => self.acked.push((got, false)),
        }
        if power {
            self.acked.last_mut().expect("never empty").1 = true;
        }
        self.in_flight = None;
    }
}
