//! `--config FILE`: what a Kubernetes ConfigMap carries for the worker and
//! the hub (capture filters and the plugins to run), as YAML or JSON.
//!
//! ```yaml
//! capture_filters:            # the shape of GET /api/capture-filters
//!   pod_regex: "^(frontend|checkout)"
//!   namespaces: []
//!   exclude_namespaces: [kube-system]
//! plugins: [http, dns, grpc, redis, kafka]
//! ```
//!
//! Command-line flags win over the file where both say something.

use anyhow::{Context, bail};
use serde::Deserialize;
use std::path::Path;
use trawl_service::CaptureFilter;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    capture_filters: Option<serde_json::Value>,
    /// Plugins to run, by name; absent: all of them.
    #[serde(default)]
    pub plugins: Option<Vec<String>>,
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        let config: Config = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).with_context(|| format!("bad JSON in config {}", path.display()))?
        } else {
            serde_yaml::from_str(&text).with_context(|| format!("bad YAML in config {}", path.display()))?
        };
        config.capture_filter().with_context(|| format!("bad capture_filters in config {}", path.display()))?;
        if config.plugins.as_ref().is_some_and(Vec::is_empty) {
            bail!("config {}: `plugins` lists none; leave it out to run them all", path.display());
        }
        Ok(config)
    }

    /// The file's capture filters, if it has any.
    pub fn capture_filter(&self) -> anyhow::Result<Option<CaptureFilter>> {
        match &self.capture_filters {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => CaptureFilter::from_json(v).map(Some).map_err(anyhow::Error::msg),
        }
    }
}

/// Capture filters from flags when any is given, else from the config.
pub fn merge_capture_filter(flags: CaptureFilter, config: Option<&Config>) -> anyhow::Result<CaptureFilter> {
    if !flags.is_open() {
        return Ok(flags);
    }
    Ok(config.map(Config::capture_filter).transpose()?.flatten().unwrap_or(flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("trawl-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn yaml_config_gives_filters_and_plugins() {
        let path = write(
            "ok.yaml",
            "capture_filters:\n  pod_regex: '^front'\n  exclude_namespaces: [kube-system]\nplugins: [http, dns]\n",
        );
        let config = Config::load(&path).unwrap();
        let filter = config.capture_filter().unwrap().unwrap();
        assert_eq!(filter.pod_regex.unwrap().as_str(), "^front");
        assert_eq!(filter.exclude_namespaces, ["kube-system"]);
        assert_eq!(config.plugins.unwrap(), ["http", "dns"]);
    }

    #[test]
    fn flags_win_over_the_file() {
        let config = Config::load(&write("f.yaml", "capture_filters: {namespaces: [shop]}\n")).unwrap();
        let flags = CaptureFilter { namespaces: vec!["other".into()], ..Default::default() };
        assert_eq!(merge_capture_filter(flags, Some(&config)).unwrap().namespaces, ["other"]);
        let merged = merge_capture_filter(CaptureFilter::default(), Some(&config)).unwrap();
        assert_eq!(merged.namespaces, ["shop"]);
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let e = Config::load(&write("r.yaml", "capture_filters: {pod_regex: '('}\n")).unwrap_err();
        assert!(format!("{e:#}").contains("pod_regex"), "{e:#}");
        let e = Config::load(&write("u.yaml", "capture_filter: {}\n")).unwrap_err();
        assert!(format!("{e:#}").contains("unknown field"), "{e:#}");
        let e = Config::load(&write("p.yaml", "plugins: []\n")).unwrap_err();
        assert!(format!("{e:#}").contains("lists none"), "{e:#}");
    }
}
