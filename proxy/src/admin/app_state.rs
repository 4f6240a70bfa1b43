//! [`AppState`]: what every handler of the admin listener sees (the API's in
//! routes.rs, the console's in console/).

use std::sync::Arc;

use super::{auth::Guard, console::history::SharedHistory};
use crate::{control_plane::ControlPlane, http_thread::ConnStats};

/// What every handler sees.
pub struct AppState {
    pub(super) guard: Arc<Guard>,
    pub(super) plane: Arc<ControlPlane>,
    pub(super) conns: Arc<ConnStats>,
    pub(super) history: SharedHistory,
}
