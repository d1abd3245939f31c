//! [`Cron`]: periodic jobs' slots in every interleaving. Nodes register one schedule, read
//! which slots are due as its catch-up policy says (`Schedule::due`), and deal with each in
//! the slot transaction (`enqueue_slot`: move `done_until` past the slot, only if it is not
//! there yet, and enqueue the slot's job); time passes between and during all of it.

use stateright::{Model, Property};

/// `CatchUp`, with the cap of `All`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CatchUp {
    None,
    Latest,
    All(u8),
}

/// Deliberate defects of the schedule's statements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CronFaults {
    /// `advance_schedule` without `done_until < $2`: each node enqueues the slots it read.
    pub slot_unguarded: bool,
    /// `register_schedule` sets `done_until` to now on every registration, not only the first.
    pub registration_resets: bool,
    /// `Schedule::due` runs the latest slot under `None` however late it is read.
    pub none_runs_late: bool,
}

/// The `errand_schedules` row of the one schedule, and the jobs its slots enqueued.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ScheduleSpec {
    /// `done_until`, once registered: slots up to it are dealt with.
    pub done_until: Option<u8>,
    /// Per slot (tick): how many jobs were enqueued for it.
    pub jobs: Vec<u8>,
    pub faults: CronFaults,
}

impl ScheduleSpec {
    /// `register_schedule` at `now`: the first registration starts the schedule at `now`
    /// (slots before it never run); later ones keep `done_until`.
    pub fn register(&mut self, now: u8) {
        if self.done_until.is_none() || self.faults.registration_resets {
            self.done_until = Some(now);
        }
    }

    /// `enqueue_slot`: deals with `slot` unless a node did (or a later one); enqueues its job
    /// when `run`. Returns whether this call enqueued it.
    pub fn enqueue_slot(&mut self, slot: u8, run: bool) -> bool {
        let Some(done) = self.done_until else {
            return false;
        };
        if done >= slot && !self.faults.slot_unguarded {
            return false;
        }
        self.done_until = Some(done.max(slot));
        if run {
            self.jobs[usize::from(slot)] += 1;
        }
        run
    }
}

/// The slots in `(done_until, now]` to deal with (every tick is a slot), oldest first, as
/// `policy` says; `late`: the read comes longer than `CatchUp::ON_TIME` after the latest.
pub fn due(
    policy: CatchUp,
    done_until: u8,
    now: u8,
    late: bool,
    faults: CronFaults,
) -> Vec<(u8, bool)> {
    if now <= done_until {
        return Vec::new();
    }
    match policy {
        CatchUp::None => vec![(now, !late || faults.none_runs_late)],
        CatchUp::Latest => vec![(now, true)],
        CatchUp::All(max) => {
            let first = (done_until + 1).max((now + 1).saturating_sub(max));
            (first..=now).map(|slot| (slot, true)).collect()
        }
    }
}

/// A node running the schedule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Node {
    pub registered: bool,
    /// The slots it read as due and has not dealt with yet, each with whether to run it and
    /// whether the read was late.
    pub plan: Vec<(u8, bool, bool)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CronSystem {
    /// The time, in slots.
    pub now: u8,
    /// When the schedule was first registered.
    pub registered_at: Option<u8>,
    pub schedule: ScheduleSpec,
    pub nodes: Vec<Node>,
    /// A slot was enqueued from a read later than `ON_TIME` after it.
    pub ran_late: bool,
    /// The latest slot enqueued.
    pub last_job: Option<u8>,
    /// A slot was enqueued after a later one.
    pub out_of_order: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CronAction {
    Tick,
    Register { node: u8 },
    Read { node: u8, late: bool },
    Slot { node: u8 },
}

/// One schedule under one catch-up policy, on `nodes` nodes, for `ticks` slots.
#[derive(Clone, Debug)]
pub struct Cron {
    pub policy: CatchUp,
    pub nodes: u8,
    pub ticks: u8,
    pub faults: CronFaults,
}

impl Cron {
    pub fn new(policy: CatchUp) -> Cron {
        Cron {
            policy,
            nodes: 2,
            ticks: 3,
            faults: CronFaults::default(),
        }
    }
}

impl Model for Cron {
    type State = CronSystem;
    type Action = CronAction;

    fn init_states(&self) -> Vec<CronSystem> {
        vec![CronSystem {
            now: 0,
            registered_at: None,
            schedule: ScheduleSpec {
                done_until: None,
                jobs: vec![0; usize::from(self.ticks) + 1],
                faults: self.faults,
            },
            nodes: vec![Node::default(); usize::from(self.nodes)],
            ran_late: false,
            last_job: None,
            out_of_order: false,
        }]
    }

    fn actions(&self, s: &CronSystem, actions: &mut Vec<CronAction>) {
        if s.now < self.ticks {
            actions.push(CronAction::Tick);
        }
        for node in 0..self.nodes {
            let n = &s.nodes[usize::from(node)];
            if !n.registered {
                actions.push(CronAction::Register { node });
            } else if n.plan.is_empty() {
                for late in [false, true] {
                    actions.push(CronAction::Read { node, late });
                }
            } else {
                actions.push(CronAction::Slot { node });
            }
        }
    }

    fn next_state(&self, last: &CronSystem, action: CronAction) -> Option<CronSystem> {
        let mut s = last.clone();
        match action {
            CronAction::Tick => s.now += 1,
            CronAction::Register { node } => {
                s.schedule.register(s.now);
                s.registered_at.get_or_insert(s.now);
                s.nodes[usize::from(node)].registered = true;
            }
            CronAction::Read { node, late } => {
                let done = s.schedule.done_until?;
                let plan = due(self.policy, done, s.now, late, self.faults);
                if plan.is_empty() {
                    return None;
                }
                s.nodes[usize::from(node)].plan = plan
                    .into_iter()
                    .map(|(slot, run)| (slot, run, late))
                    .collect();
            }
            CronAction::Slot { node } => {
                let (slot, run, late) = s.nodes[usize::from(node)].plan.remove(0);
                if s.schedule.enqueue_slot(slot, run) {
                    s.ran_late |= late;
                    s.out_of_order |= s.last_job.is_some_and(|last| last >= slot);
                    s.last_job = Some(slot);
                }
            }
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut properties = vec![
            Property::always("a slot is enqueued at most once", |_, s: &CronSystem| {
                s.schedule.jobs.iter().all(|&n| n <= 1)
            }),
            Property::always("slots are enqueued in time order", |_, s: &CronSystem| {
                !s.out_of_order
            }),
        ];
        match self.policy {
            CatchUp::None => properties.push(Property::always(
                "under catch_up none, no slot runs late",
                |_, s: &CronSystem| !s.ran_late,
            )),
            CatchUp::Latest => {}
            CatchUp::All(_) => properties.push(Property::always(
                "under catch_up all, every slot since registration within the cap runs once dealt with",
                |m: &Cron, s: &CronSystem| {
                    let CatchUp::All(max) = m.policy else {
                        return true;
                    };
                    let (Some(from), Some(done)) = (s.registered_at, s.schedule.done_until) else {
                        return true;
                    };
                    let settled = s.nodes.iter().all(|n| n.plan.is_empty());
                    // The cap holds the slots of one read: with the time within it, none is
                    // skipped.
                    let within = done.saturating_sub(from) <= max;
                    !settled
                        || !within
                        || (from + 1..=done).all(|slot| s.schedule.jobs[usize::from(slot)] == 1)
                },
            )),
        }
        properties.push(Property::sometimes(
            "two nodes read the same slot",
            |_, s: &CronSystem| {
                s.nodes.iter().all(|n| !n.plan.is_empty())
                    && s.nodes[0].plan.first().map(|p| p.0) == s.nodes[1].plan.first().map(|p| p.0)
            },
        ));
        properties
    }
}
