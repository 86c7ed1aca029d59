//! `status [--json] [--check]`.

use crate::app::{exit, App, Failure};
use crate::report::{self, StatusRow};

/// Every credential's version, age and due time; the exit code says whether all is well.
pub(super) async fn status(app: &App, json: bool, check: bool) -> Result<i32, Failure> {
    let rows = crate::standing::status_rows(app).await;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("rows serialise")
        );
    } else {
        print!("{}", report::status_table(&rows));
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
    } else if check && rows.iter().any(StatusRow::fails_check) {
        exit::CHECK_FAILED
    } else {
        exit::OK
    })
}
