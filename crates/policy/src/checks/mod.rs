//! Static checks that OPA performs when compiling and regorus does not (or only
//! when the offending code happens to be evaluated).

mod calls;
mod conflicts;

pub use calls::unsupported_builtins;
pub(crate) use calls::{check_calls, qualify_local_calls};
pub(crate) use conflicts::check_path_conflicts;
