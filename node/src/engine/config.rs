//! The settings of every machine of a node, and their validation.

use std::sync::Arc;

use hearsay_overlay::chord::ChordConfig;
use hearsay_overlay::scribe::ScribeConfig;
use hearsay_overlay::swim::SwimConfig;
use hearsay_protocols::aggregate::AggConfig;
use hearsay_protocols::anti_entropy::AeConfig;
use hearsay_protocols::pbcast::PbConfig;
use hearsay_protocols::rumor::RumorConfig;

use super::multicast::MulticastConfig;

/// Settings of every machine of a node.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Membership and failure detection.
    pub swim: Arc<SwimConfig>,
    /// The ring.
    pub chord: Arc<ChordConfig>,
    /// The topic trees.
    pub scribe: Arc<ScribeConfig>,
    /// Repair and delivery.
    pub pbcast: Arc<PbConfig>,
    /// History catch-up.
    pub ae: Arc<AeConfig>,
    /// Rumor mongering for `gossip`-mode topics.
    pub rumor_topics: Arc<RumorConfig>,
    /// Rumor mongering for query announcements (push, feedback counter, k = 4: §5.1).
    pub rumor_queries: Arc<RumorConfig>,
    /// Aggregation.
    pub agg: Arc<AggConfig>,
    /// Topics whose name starts with this use rumor mongering instead of a tree.
    pub gossip_prefix: String,
    /// Largest frame accepted.
    pub frame_limit: usize,
}

impl EngineConfig {
    /// The daemon's defaults on top of a SWIM preset (`lan`, `wan` or `local`, after
    /// memberlist).
    pub fn with_swim(swim: SwimConfig) -> Self {
        // An announcement is an encoded Query (under 200 bytes); one querier holds at most 4
        // hot slots (issue 12).
        let queries =
            RumorConfig { k: 4, payload_max: 1024, hot_per_origin_max: 4, ..RumorConfig::default() };
        EngineConfig {
            swim: Arc::new(swim),
            // One finger refresh per second, not per 250 ms: the daemon's ring learns members
            // from SWIM (member up/down) and a full refresh still takes about log2 N ticks.
            // At 250 ms, fix_fingers lookups were a third of all frames of an idle N = 100
            // cluster (hearsay bench).
            chord: Arc::new(ChordConfig {
                fix_fingers_interval: hearsay_protocols::Duration::from_secs(1),
                ..ChordConfig::default()
            }),
            scribe: Arc::new(ScribeConfig::default()),
            pbcast: Arc::new(PbConfig::default()),
            ae: Arc::new(AeConfig::default()),
            rumor_topics: Arc::new(RumorConfig::default()),
            rumor_queries: Arc::new(queries),
            agg: Arc::new(AggConfig::default()),
            gossip_prefix: "gossip/".into(),
            frame_limit: hearsay_protocols::wire::DEFAULT_FRAME_LIMIT,
        }
    }

    /// memberlist's LAN preset and the daemon's defaults.
    pub fn lan() -> Self {
        Self::with_swim(SwimConfig::lan())
    }

    /// The settings of the multicast stack (ring, trees, pbcast).
    pub fn multicast(&self) -> MulticastConfig {
        MulticastConfig {
            chord: self.chord.clone(),
            scribe: self.scribe.clone(),
            pbcast: self.pbcast.clone(),
        }
    }

    /// Check every machine's settings; the first that cannot work is the error, naming the
    /// machine and the setting. The daemon refuses such a config at load.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.swim.validate()?;
        self.chord.validate()?;
        self.scribe.validate()?;
        self.pbcast.validate()?;
        self.ae.validate()?;
        self.rumor_topics.validate().map_err(ConfigError::RumorTopics)?;
        self.rumor_queries.validate().map_err(ConfigError::RumorQueries)?;
        self.agg.validate()?;
        if self.frame_limit < hearsay_protocols::wire::DATAGRAM_BUDGET {
            return Err(ConfigError::FrameLimit(self.frame_limit));
        }
        Ok(())
    }
}

/// A setting of one of the machines that cannot work.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Membership (`swim`).
    #[error(transparent)]
    Swim(#[from] hearsay_overlay::swim::ConfigError),
    /// The ring (`chord`).
    #[error(transparent)]
    Chord(#[from] hearsay_overlay::chord::ConfigError),
    /// The trees (`scribe`).
    #[error(transparent)]
    Scribe(#[from] hearsay_overlay::scribe::ConfigError),
    /// Repair (`pbcast`).
    #[error(transparent)]
    Pbcast(#[from] hearsay_protocols::pbcast::ConfigError),
    /// Anti-entropy (`ae`).
    #[error(transparent)]
    AntiEntropy(#[from] hearsay_protocols::anti_entropy::ConfigError),
    /// Rumor mongering of `gossip` topics (`rumor_topics`).
    #[error("rumor_topics: {0}")]
    RumorTopics(hearsay_protocols::rumor::ConfigError),
    /// Rumor mongering of query announcements (`rumor_queries`).
    #[error("rumor_queries: {0}")]
    RumorQueries(hearsay_protocols::rumor::ConfigError),
    /// Aggregation (`agg`).
    #[error(transparent)]
    Aggregation(#[from] hearsay_protocols::aggregate::ConfigError),
    /// A frame limit below one datagram.
    #[error("frame_limit of {0} bytes is below one datagram ({budget} bytes)", budget = hearsay_protocols::wire::DATAGRAM_BUDGET)]
    FrameLimit(usize),
}
