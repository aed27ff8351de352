//! The agent's configuration: a TOML file with the same keys as the command-line flags;
//! flags win over the file, the file over the defaults.
//!
//! ```toml
//! name = "n1"
//! bind = "0.0.0.0:7946"
//! advertise = "10.0.0.7:7946" # what others dial (default: the bind address)
//! join = ["10.0.0.5:7946"]
//! api = "127.0.0.1:7070"
//! secret_file = "/etc/hearsay/cluster.key"
//! data_dir = "/var/lib/hearsay"
//! preset = "lan"            # lan | wan | local (memberlist's timing presets)
//! log = "info"
//! ```
//!
//! Unknown keys are an error (a typo must not be silently ignored).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Timing presets, after memberlist's configurations (PROTOCOLS.md §6.13).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// memberlist's DefaultLANConfig: probe every 1 s.
    #[default]
    Lan,
    /// memberlist's DefaultWANConfig: probe every 5 s.
    Wan,
    /// memberlist's DefaultLocalConfig: probe every 1 s, short timeouts (one machine).
    Local,
}

/// The file form: every key optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Node name shown in member lists.
    pub name: Option<String>,
    /// UDP address for QUIC.
    pub bind: Option<SocketAddr>,
    /// Address other nodes should use to reach this one.
    pub advertise: Option<SocketAddr>,
    /// Seed addresses.
    pub join: Option<Vec<SocketAddr>>,
    /// Local API address.
    pub api: Option<SocketAddr>,
    /// Cluster secret file.
    pub secret_file: Option<PathBuf>,
    /// Where the node key lives.
    pub data_dir: Option<PathBuf>,
    /// Timing preset.
    pub preset: Option<Preset>,
    /// Log filter (tracing's `EnvFilter` syntax).
    pub log: Option<String>,
}

/// The resolved configuration of an agent.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    /// Node name shown in member lists.
    pub name: String,
    /// UDP address for QUIC.
    pub bind: SocketAddr,
    /// Address other nodes should use to reach this one (None: derived from the bind address).
    pub advertise: Option<SocketAddr>,
    /// Seed addresses (empty: start a new cluster).
    pub join: Vec<SocketAddr>,
    /// Local API address.
    pub api: SocketAddr,
    /// Cluster secret file.
    pub secret_file: PathBuf,
    /// Where the node key lives.
    pub data_dir: PathBuf,
    /// Timing preset.
    pub preset: Preset,
    /// Log filter.
    pub log: String,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// The file is not valid TOML for these keys.
    #[error("config file {0}: {1}")]
    Parse(PathBuf, String),
    /// A required setting is missing.
    #[error("{0}")]
    Missing(String),
    /// A setting has a value that cannot work.
    #[error("{0}")]
    Invalid(String),
}

impl FileConfig {
    /// Read and parse a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io(path.to_owned(), e))?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse(path.to_owned(), e.to_string()))
    }

    /// Keys set in `flags` replace those of `self`.
    pub fn overridden_by(self, flags: FileConfig) -> FileConfig {
        FileConfig {
            name: flags.name.or(self.name),
            bind: flags.bind.or(self.bind),
            advertise: flags.advertise.or(self.advertise),
            join: flags.join.filter(|j| !j.is_empty()).or(self.join),
            api: flags.api.or(self.api),
            secret_file: flags.secret_file.or(self.secret_file),
            data_dir: flags.data_dir.or(self.data_dir),
            preset: flags.preset.or(self.preset),
            log: flags.log.or(self.log),
        }
    }

    /// Fill in defaults and check what must be set.
    pub fn resolve(self) -> Result<AgentConfig, ConfigError> {
        let bind = self.bind.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 7946)));
        let name = self.name.unwrap_or_else(|| format!("node-{}", bind.port()));
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(ConfigError::Invalid(format!("name `{name}` must be 1 to 64 printable characters")));
        }
        let secret_file = self.secret_file.ok_or_else(|| {
            ConfigError::Missing(
                "no cluster secret: pass --secret-file FILE (make one with `hearsay keygen --out FILE`)"
                    .into(),
            )
        })?;
        let data_dir = self.data_dir.unwrap_or_else(|| PathBuf::from(format!("hearsay-data-{name}")));
        Ok(AgentConfig {
            name,
            bind,
            advertise: self.advertise,
            join: self.join.unwrap_or_default(),
            api: self.api.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7070))),
            secret_file,
            data_dir,
            preset: self.preset.unwrap_or_default(),
            log: self.log.unwrap_or_else(|| "info".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file: FileConfig = toml::from_str(
            r#"
            name = "from-file"
            bind = "127.0.0.1:9000"
            join = ["127.0.0.1:9001"]
            secret_file = "s.key"
            preset = "local"
            advertise = "127.0.0.1:9100"
            "#,
        )
        .unwrap();
        let flags = FileConfig { name: Some("from-flag".into()), ..FileConfig::default() };
        let c = file.overridden_by(flags).resolve().unwrap();
        assert_eq!(c.name, "from-flag");
        assert_eq!(c.bind, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.join, vec!["127.0.0.1:9001".parse().unwrap()]);
        assert_eq!(c.preset, Preset::Local);
        assert_eq!(c.advertise, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(c.api, "127.0.0.1:7070".parse().unwrap());
    }

    #[test]
    fn mistakes_are_errors_that_say_what_to_do() {
        assert!(toml::from_str::<FileConfig>("nmae = \"x\"").is_err(), "unknown keys are refused");
        assert!(toml::from_str::<FileConfig>("bind = \"not an address\"").is_err());
        let e = FileConfig::default().resolve().unwrap_err().to_string();
        assert!(e.contains("hearsay keygen"), "{e}");
        let e =
            FileConfig { name: Some(String::new()), secret_file: Some("s".into()), ..FileConfig::default() }
                .resolve()
                .unwrap_err();
        assert!(matches!(e, ConfigError::Invalid(_)));
    }
}
