//! `status [NAME] [--json] [--check]`.

use crate::app::{exit, App, Failure};
use crate::report::{self, StatusRow};

/// Every credential's version, age and due time; the exit code says whether all is well.
pub(super) async fn status(
    app: &App,
    name: Option<&str>,
    json: bool,
    check: bool,
) -> Result<i32, Failure> {
    if let Some(name) = name {
        app.credential(name)?;
    }
    let rows = crate::standing::status_rows(app, name).await;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("rows serialise")
        );
    } else {
        print!("{}", report::status_table(&rows));
        print!("{}", group_lines(app).await);
    }
    // A credential set that matches nothing, or a path refused: named with the set and path.
    for note in &app.notes {
        eprintln!("warning: {note}");
    }
    let errors: Vec<&StatusRow> = rows.iter().filter(|r| r.error.is_some()).collect();
    for r in &errors {
        eprintln!(
            "error: {}: {}",
            r.name,
            r.error.as_deref().unwrap_or_default()
        );
    }
    Ok(if !errors.is_empty() {
        exit::VAULT
    } else if check && (rows.iter().any(StatusRow::fails_check) || !app.notes.is_empty()) {
        exit::CHECK_FAILED
    } else {
        exit::OK
    })
}

/// The group's live members and how many of the configured credentials each owns.
async fn group_lines(app: &App) -> String {
    let records = match crate::standing::member_records(app).await {
        Ok(r) => r,
        Err(e) => return format!("group: members unreadable: {e}\n"),
    };
    let members = crate::fleet::live_members(&records, chrono::Utc::now());
    if members.is_empty() {
        return "group: no live member (no daemon runs with this state prefix)\n".to_string();
    }
    let shares = crate::fleet::shares(
        app.config.credentials.iter().map(|c| c.name.as_str()),
        &members,
    );
    let mut out = format!("group: {} live members\n", members.len());
    for (member, owned) in shares {
        out.push_str(&format!("  {member}  owns {owned}\n"));
    }
    out
}
