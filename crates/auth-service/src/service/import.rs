//! Importing the personal access tokens of the system a team ran before (seed 002's
//! migration, `cargo xtask import-pats`): each exported token that maps to an existing
//! Portcullis account becomes a PAT of that user, stored by its hash only, scope `*`, with its
//! name, expiry, creation and last use, marked with its legacy id. Nothing is guessed: a row
//! that does not map is reported with its line and reason. A second run finds every token
//! already there and adds nothing.

use std::collections::HashMap;

use auth_contract::scope::Scopes;
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{AuthService, clients::display_parts};
use crate::{
    domain::legacy_export::{self, ExportFile, Mapping, Reason, TokenRow, Users},
    error::Error,
    store::{PersonalAccessToken, StoreError, User},
};

pub use crate::domain::legacy_export::{ExportError, ExportFile as ImportFile, Reason as ImportReason};

/// What became of one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Imported,
    /// The same token is stored already (an earlier run, or an earlier line).
    AlreadyImported,
    Skipped(Reason),
}

/// One line of either file and what became of it. Users-file lines appear only when they map
/// nobody.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedLine {
    pub file: ExportFile,
    pub line: u64,
    pub outcome: Outcome,
}

impl std::fmt::Display for ImportedLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.outcome {
            Outcome::Imported => write!(f, "{} line {}: imported", self.file, self.line),
            Outcome::AlreadyImported => write!(f, "{} line {}: already imported", self.file, self.line),
            Outcome::Skipped(reason) => write!(f, "{} line {}: skipped: {reason}", self.file, self.line),
        }
    }
}

/// Every line's outcome, in file order (users-file problems first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub lines: Vec<ImportedLine>,
    /// `LEGACY_PAT_ACCEPT_UNTIL` as this service reads it: imported tokens work until then
    /// (never when unset).
    pub accepted_until: Option<OffsetDateTime>,
}

impl ImportReport {
    fn count(&self, file: ExportFile, pick: impl Fn(&Outcome) -> bool) -> usize {
        self.lines.iter().filter(|l| l.file == file && pick(&l.outcome)).count()
    }

    pub fn imported(&self) -> usize {
        self.count(ExportFile::Tokens, |o| *o == Outcome::Imported)
    }

    pub fn already_imported(&self) -> usize {
        self.count(ExportFile::Tokens, |o| *o == Outcome::AlreadyImported)
    }

    /// Token lines not imported, for any reason.
    pub fn skipped(&self) -> usize {
        self.count(ExportFile::Tokens, |o| matches!(o, Outcome::Skipped(_)))
    }

    /// Users-file lines that map nobody.
    pub fn unusable_users(&self) -> usize {
        self.count(ExportFile::Users, |_| true)
    }
}

/// Why an import stopped before it was done.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("{0}")]
    Service(#[from] Error),
}

impl AuthService {
    /// Imports the legacy export: `tokens` (`id,name,token,userId,expiresAt,lastUsedAt,
    /// createdAt,updatedAt`) and `users` (`userId,email`), CSV with header rows. Fails only for
    /// a bad header or a storage error; every other problem is a line of the report. Expiry is
    /// judged by the service's clock.
    pub async fn import_legacy_pats(&self, tokens: &[u8], users: &[u8]) -> Result<ImportReport, ImportError> {
        let users = legacy_export::read_users(users)?;
        let rows = legacy_export::read_tokens(tokens)?;
        let mut report = ImportReport { lines: Vec::new(), accepted_until: self.inner.config.legacy_pat_accept_until };
        for (line, reason) in &users.problems {
            report.lines.push(ImportedLine {
                file: ExportFile::Users,
                line: *line,
                outcome: Outcome::Skipped(reason.clone()),
            });
        }
        let mut accounts: HashMap<String, Option<User>> = HashMap::new();
        for row in rows {
            let (line, outcome) = match row {
                Err((line, reason)) => (line, Outcome::Skipped(reason)),
                Ok(row) => (row.line, self.import_row(&row, &users, &mut accounts).await?),
            };
            report.lines.push(ImportedLine { file: ExportFile::Tokens, line, outcome });
        }
        Ok(report)
    }

    async fn import_row(
        &self,
        row: &TokenRow,
        users: &Users,
        accounts: &mut HashMap<String, Option<User>>,
    ) -> Result<Outcome, Error> {
        let hash = row.token.hash();
        if self.store().pat_by_hash(&hash).await?.is_some() {
            return Ok(Outcome::AlreadyImported);
        }
        let email = match users.mappings.get(&row.legacy_user) {
            None => return Ok(Outcome::Skipped(Reason::UnknownLegacyUser(row.legacy_user.clone()))),
            Some(Mapping::Unusable { line }) => {
                return Ok(Outcome::Skipped(Reason::UnusableMapping { user: row.legacy_user.clone(), line: *line }));
            }
            Some(Mapping::Ambiguous { lines }) => {
                return Ok(Outcome::Skipped(Reason::Ambiguous { user: row.legacy_user.clone(), lines: *lines }));
            }
            Some(Mapping::Email(email)) => email,
        };
        let now = self.now();
        if let Some(expired) = row.expires_at.filter(|at| *at <= now) {
            return Ok(Outcome::Skipped(Reason::Expired(expired)));
        }
        let account = match accounts.get(email.as_str()) {
            Some(known) => known.clone(),
            None => {
                let found = self.store().user_by_email(email.as_str()).await?;
                accounts.insert(email.as_str().to_owned(), found.clone());
                found
            }
        };
        let Some(user) = account else {
            return Ok(Outcome::Skipped(Reason::NoAccount(email.as_str().to_owned())));
        };
        let (prefix, last_four) = display_parts(row.token.expose());
        let pat = PersonalAccessToken {
            id: Uuid::new_v4(),
            user_id: user.id,
            name: row.name.clone(),
            token_hash: hash,
            prefix,
            last_four,
            scopes: Scopes::all(),
            created_at: row.created_at,
            expires_at: row.expires_at,
            last_used_at: row.last_used_at,
            revoked_at: None,
            legacy_id: Some(row.legacy_id.clone()),
        };
        match self.store().insert_pat(&pat).await {
            Ok(()) => {}
            // Stored meanwhile (a concurrent run): the same token, already there.
            Err(StoreError::Conflict(_)) => return Ok(Outcome::AlreadyImported),
            Err(err) => return Err(err.into()),
        }
        self.audit(
            Some(user.id),
            "pat_imported",
            "success",
            None,
            json!({"pat_id": pat.id, "name": pat.name, "legacy_id": row.legacy_id}),
        )
        .await;
        Ok(Outcome::Imported)
    }
}
