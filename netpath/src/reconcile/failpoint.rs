//! Failpoints: with the `testing` feature, `NETPATH_FAILPOINT=<at>[,<at>...]`
//! makes the step named `at` fail after its real changes, so that the tests
//! can check that an apply rolls back. Without the feature (the shipped
//! binary) a failpoint does nothing and reads no environment.

use super::error::StepError;

/// Fails when `NETPATH_FAILPOINT` names `at` (with the `testing` feature).
#[cfg(feature = "testing")]
pub fn failpoint(at: &str) -> Result<(), StepError> {
    match std::env::var("NETPATH_FAILPOINT") {
        Ok(v) if v.split(',').any(|f| f == at) => Err(StepError::Failpoint { at: at.into() }),
        _ => Ok(()),
    }
}

/// Does nothing: failpoints exist only with the `testing` feature.
#[cfg(not(feature = "testing"))]
pub fn failpoint(_at: &str) -> Result<(), StepError> {
    Ok(())
}
