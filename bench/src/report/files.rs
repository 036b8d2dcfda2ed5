//! The result files a page links to (the markdown page and its sections
//! share it).

use std::path::PathBuf;

/// The result files a page links to.
#[derive(Clone, Debug, Default)]
pub struct Files {
    /// The results of the figures (baseline and the scaling conditions).
    pub json: Option<PathBuf>,
    /// Their chart.
    pub png: Option<PathBuf>,
    /// The results of the service-scale group (the same file when one run
    /// measured both).
    pub scale_json: Option<PathBuf>,
    /// Its chart.
    pub scale_png: Option<PathBuf>,
    /// The results of the cost-growth curves.
    pub curves_json: Option<PathBuf>,
    /// Their chart.
    pub curves_png: Option<PathBuf>,
}
