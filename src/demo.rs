//! `airgate demo`: a complete gateway on 127.0.0.1 in front of a built-in demo upstream, with a
//! built-in development issuer, printing ready-to-paste curl commands. No files, no network.

/// Runs the demo until Ctrl-C.
pub async fn run(_port: u16, _admin_port: u16) -> Result<(), String> {
    Err("the demo arrives with the identity issue".into())
}
