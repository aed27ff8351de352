//! What this node tells its operator (issue 15's event stream): members joining, leaving,
//! failing, suspected, alive again and updating their profile, as this node's member table
//! sees them, and this node's own place in its topics' trees.
//!
//! Member changes are classified against what this node last reported of each member,
//! `Engine::advertised` (live members only, so bounded by SWIM's table; the topic views use
//! the same entry, so the stream costs no state of its own): a member never reported
//! live that becomes live *joins*; a live one that becomes Dead *fails*, Left *leaves* (and is
//! forgotten, so its return is a join again); Alive → Suspect is *suspect*, Suspect → Alive
//! is *alive*; a live member whose address, name or tags change is an *update* (its topics
//! change with every subscription and are not reported). A member never seen live that is
//! reported Dead or Left is not reported. This node's own tag changes are an update about
//! itself.

use hearsay_overlay::scribe::{Detach, ScribeEvent};
use hearsay_overlay::swim::{MemberEvent, SharedProfile, State};
use hearsay_protocols::{Instant, NodeId, TopicId};

use super::views::MemberView;
use super::{Engine, EngineEvent};

/// A change in a member's entry, as Serf names its member events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberChange {
    /// A member not known live before is live.
    Join,
    /// A live member left gracefully.
    Leave,
    /// A live member was declared dead.
    Failed,
    /// A member is suspected.
    Suspect,
    /// A suspected member refuted and is alive.
    Alive,
    /// A live member's address, name or tags changed.
    Update,
}

impl MemberChange {
    /// The event's name on the stream (`member-join`, ...).
    pub fn name(self) -> &'static str {
        match self {
            MemberChange::Join => "member-join",
            MemberChange::Leave => "member-leave",
            MemberChange::Failed => "member-failed",
            MemberChange::Suspect => "member-suspect",
            MemberChange::Alive => "member-alive",
            MemberChange::Update => "member-update",
        }
    }
}

/// A change of this node's place in a topic's tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TreeChange {
    /// It got a parent.
    Attached {
        /// The parent.
        parent: NodeId,
    },
    /// It lost its parent (or its root role) and re-joins.
    Detached {
        /// Why: `parent-timeout`, `parent-down`, `parent-left`, `cycle` or `root-moved`.
        cause: &'static str,
    },
    /// It is the topic's root.
    Root,
}

impl TreeChange {
    /// The event's name on the stream (`tree-attached`, ...).
    pub fn name(self) -> &'static str {
        match self {
            TreeChange::Attached { .. } => "tree-attached",
            TreeChange::Detached { .. } => "tree-detached",
            TreeChange::Root => "tree-root",
        }
    }
}

/// One event of the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A member's entry changed.
    Member {
        /// How.
        change: MemberChange,
        /// The member as it is now.
        member: MemberView,
        /// When, in the Engine's clock.
        at: Instant,
    },
    /// This node's place in a topic's tree changed.
    Tree {
        /// How.
        change: TreeChange,
        /// The topic.
        topic: TopicId,
        /// Its name, when known here.
        name: Option<String>,
        /// When, in the Engine's clock.
        at: Instant,
    },
}

fn detach_cause(d: Detach) -> &'static str {
    match d {
        Detach::ParentTimeout => "parent-timeout",
        Detach::ParentDown => "parent-down",
        Detach::ParentLeft => "parent-left",
        Detach::Cycle => "cycle",
        Detach::RootMoved => "root-moved",
    }
}

/// True if what operators see of a profile (address, name, tags) differs.
fn profile_changed(a: &SharedProfile, b: &SharedProfile) -> bool {
    a.addr() != b.addr() || a.meta().name() != b.meta().name() || a.meta().tags() != b.meta().tags()
}

impl Engine {
    /// The view of a member from its event.
    fn member_view(ev: &MemberEvent) -> MemberView {
        MemberView {
            id: ev.node,
            name: ev.profile.meta().name().to_string(),
            addr: ev.profile.addr().to_socket(),
            state: ev.state,
            incarnation: ev.incarnation,
            ring_id: hearsay_overlay::chord::RingId::of(&ev.node),
            tags: ev.profile.meta().tags().to_map(),
        }
    }

    /// Classify a member event against what was last reported of the member (module docs).
    pub(super) fn notice_member(
        &mut self,
        now: Instant,
        ev: &MemberEvent,
        before: Option<&(State, SharedProfile)>,
    ) {
        let mut changes: Vec<MemberChange> = Vec::new();
        match (before, ev.state) {
            (None, State::Alive) => changes.push(MemberChange::Join),
            (None, State::Suspect) => changes.extend([MemberChange::Join, MemberChange::Suspect]),
            (None, State::Dead | State::Left) => {}
            (Some(_), State::Dead) => changes.push(MemberChange::Failed),
            (Some(_), State::Left) => changes.push(MemberChange::Leave),
            (Some((was, profile)), now_state) => {
                match (*was, now_state) {
                    (State::Alive, State::Suspect) => changes.push(MemberChange::Suspect),
                    (State::Suspect, State::Alive) => changes.push(MemberChange::Alive),
                    _ => {}
                }
                if profile_changed(profile, &ev.profile) {
                    changes.push(MemberChange::Update);
                }
            }
        }
        for change in changes {
            let member = Self::member_view(ev);
            self.events.push_back(EngineEvent::Notice(Notice::Member { change, member, at: now }));
        }
    }

    /// Report this node's own profile change (its tags).
    pub(super) fn notice_self_update(&mut self, now: Instant) {
        if let Some(member) = self.members().into_iter().find(|m| m.id == self.id) {
            let notice = Notice::Member { change: MemberChange::Update, member, at: now };
            self.events.push_back(EngineEvent::Notice(notice));
        }
    }

    /// Report a tree change of this node (first-phase data is not a change).
    pub(super) fn notice_tree(&mut self, now: Instant, ev: &ScribeEvent) {
        let (change, topic) = match ev {
            ScribeEvent::Attached { topic, parent } => (TreeChange::Attached { parent: *parent }, *topic),
            ScribeEvent::Detached { topic, cause } => {
                (TreeChange::Detached { cause: detach_cause(*cause) }, *topic)
            }
            ScribeEvent::BecameRoot { topic } => (TreeChange::Root, *topic),
            _ => return,
        };
        let name = self.topics.get(&topic).and_then(|s| s.name.clone());
        self.events.push_back(EngineEvent::Notice(Notice::Tree { change, topic, name, at: now }));
    }
}
