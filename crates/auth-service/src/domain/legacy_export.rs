//! The export of the system a team ran before Portcullis (seed 002), read for
//! `cargo xtask import-pats`: its personal access tokens (`id,name,token,userId,expiresAt,
//! lastUsedAt,createdAt,updatedAt`) and a second file mapping its user ids to emails
//! (`userId,email`). Both are CSV with a header row, fields quoted or not, in any column order.
//! Each record becomes a typed row or the reason it cannot be one, with the line it starts on;
//! only a header that is not the expected one refuses a whole file. Nothing here ever shows a
//! token: reasons name columns, and values that look like tokens are withheld.

use std::collections::HashMap;

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset, format_description::well_known::Rfc3339};

use super::{credential::LegacyPat, email::Email, name::Name};
use crate::error::Error;

/// The columns of the tokens file, as the legacy `COPY … CSV HEADER` names them.
pub const TOKEN_COLUMNS: [&str; 8] =
    ["id", "name", "token", "userId", "expiresAt", "lastUsedAt", "createdAt", "updatedAt"];
/// The columns of the users file.
pub const USER_COLUMNS: [&str; 2] = ["userId", "email"];
/// Longest legacy id (token or user) taken; longer ones are not ids.
const MAX_ID_CHARS: usize = 255;

/// Which of the two files a line is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFile {
    Tokens,
    Users,
}

impl std::fmt::Display for ExportFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tokens => "tokens",
            Self::Users => "users",
        })
    }
}

/// Why a line is not imported (or, in the users file, cannot map anyone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The record is not a well-formed row: the message names the column and the rule.
    Malformed(String),
    /// The token is not `af_live_`/`af_test_` and 32 base62 characters.
    NotLegacyShape,
    /// The token expired at this instant (by the service's clock).
    Expired(OffsetDateTime),
    /// The row's legacy user is not in the users file.
    UnknownLegacyUser(String),
    /// The row's legacy user is in the users file, on a line that maps nobody.
    UnusableMapping { user: String, line: u64 },
    /// The legacy user is mapped to two different emails.
    Ambiguous { user: String, lines: (u64, u64) },
    /// The mapped email has no Portcullis account.
    NoAccount(String),
}

/// A value from the export as it may be shown: at most 64 characters, and withheld when it
/// could be a token (a column shifted by a broken export would otherwise print one).
fn shown(value: &str) -> String {
    let looks_secret = ["af_live_", "af_test_", "pcp_", "pck_", "pcr_", "pcs_"].iter().any(|p| value.contains(p));
    if looks_secret {
        return "(withheld: it looks like a token)".to_owned();
    }
    let short: String = value.chars().take(64).collect();
    if short.len() < value.len() { format!("{short}…") } else { short }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "malformed row: {why}"),
            Self::NotLegacyShape => f.write_str(
                "the token does not have the legacy shape (af_live_ or af_test_, then 32 characters 0-9A-Za-z)",
            ),
            Self::Expired(at) => write!(f, "expired at {}", at.format(&Rfc3339).unwrap_or_default()),
            Self::UnknownLegacyUser(user) => write!(f, "legacy user `{}` is not in the users file", shown(user)),
            Self::UnusableMapping { user, line } => {
                write!(f, "legacy user `{}` has no usable mapping (users line {line})", shown(user))
            }
            Self::Ambiguous { user, lines: (first, second) } => write!(
                f,
                "legacy user `{}` is mapped to two different emails (users lines {first} and {second})",
                shown(user)
            ),
            Self::NoAccount(email) => write!(f, "no Portcullis account has the email `{}`", shown(email)),
        }
    }
}

/// A whole file refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    #[error("{file} file: bad header: {message}; expected the columns {expected}")]
    BadHeader { file: ExportFile, message: String, expected: String },
}

/// One importable token, as exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub line: u64,
    pub legacy_id: String,
    pub name: String,
    pub token: LegacyPat,
    pub legacy_user: String,
    pub expires_at: Option<OffsetDateTime>,
    pub last_used_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
}

/// A line of the tokens file: a row, or why it is not one.
pub type TokenLine = Result<TokenRow, (u64, Reason)>;

/// Where a legacy user id leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapping {
    Email(Email),
    /// Its line maps nobody (the reason is reported on that line).
    Unusable {
        line: u64,
    },
    /// Mapped twice to different emails, on these lines.
    Ambiguous {
        lines: (u64, u64),
    },
}

/// The users file: each legacy user id's mapping, and the lines that map nobody.
#[derive(Debug, Default)]
pub struct Users {
    pub mappings: HashMap<String, Mapping>,
    pub problems: Vec<(u64, Reason)>,
}

/// Each expected column's index in the file.
type Columns = HashMap<&'static str, usize>;
/// A record with the line it starts on, or why it is not one.
type RawLine = (u64, Result<csv::StringRecord, Reason>);

/// A record's fields by column name.
struct Record<'a> {
    fields: &'a csv::StringRecord,
    columns: &'a Columns,
}

impl Record<'_> {
    fn get(&self, column: &str) -> &str {
        self.columns.get(column).and_then(|&i| self.fields.get(i)).map_or("", str::trim)
    }

    fn id(&self, column: &str) -> Result<String, Reason> {
        let value = self.get(column);
        if value.is_empty() {
            return Err(Reason::Malformed(format!("{column} is empty")));
        }
        if value.chars().count() > MAX_ID_CHARS || value.chars().any(char::is_control) {
            return Err(Reason::Malformed(format!("{column} is not an id")));
        }
        Ok(value.to_owned())
    }

    fn instant(&self, column: &str) -> Result<Option<OffsetDateTime>, Reason> {
        let value = self.get(column);
        if value.is_empty() {
            return Ok(None);
        }
        parse_instant(value).map(Some).ok_or_else(|| {
            Reason::Malformed(format!(
                "{column} is not a date (RFC 3339, or YYYY-MM-DD HH:MM:SS[.fraction][±HH[:MM]], UTC when no offset)"
            ))
        })
    }
}

/// Reads one CSV file: the header's columns by name (each expected one exactly once, no
/// others; a UTF-8 byte-order mark and letter case ignored), then every record with its line.
fn read(bytes: &[u8], file: ExportFile, expected: &[&'static str]) -> Result<(Columns, Vec<RawLine>), ExportError> {
    let bad = |message: String| ExportError::BadHeader { file, message, expected: expected.join(",") };
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(bytes);
    let mut records = reader.records();
    let header = match records.next() {
        None => return Err(bad("the file is empty".to_owned())),
        Some(Err(_)) => return Err(bad("the first line is not CSV text".to_owned())),
        Some(Ok(header)) => header,
    };
    let mut columns = HashMap::new();
    for (index, name) in header.iter().enumerate() {
        let name = name.trim();
        let Some(&known) = expected.iter().find(|e| e.eq_ignore_ascii_case(name)) else {
            return Err(bad(format!("unexpected column `{}`", shown(name))));
        };
        if columns.insert(known, index).is_some() {
            return Err(bad(format!("column `{known}` appears twice")));
        }
    }
    if let Some(missing) = expected.iter().find(|e| !columns.contains_key(*e)) {
        return Err(bad(format!("column `{missing}` is missing")));
    }
    let width = header.len();
    // The line a record starts on, counted from its byte offset: the reader's own line count,
    // and its offset, stop before the blank lines it skips.
    let line_at = |position: Option<&csv::Position>| {
        let mut at = position.map_or(0, |p| usize::try_from(p.byte()).unwrap_or(usize::MAX)).min(bytes.len());
        while bytes.get(at).is_some_and(|b| matches!(b, b'\r' | b'\n')) {
            at += 1;
        }
        1 + u64::try_from(bytes[..at].iter().filter(|&&b| b == b'\n').count()).unwrap_or(u64::MAX)
    };
    let mut rows = Vec::new();
    for record in records {
        let row = match record {
            Ok(record) => {
                let line = line_at(record.position());
                if record.len() == 1 && record.get(0).is_some_and(|f| f.trim().is_empty()) {
                    continue;
                }
                if record.len() == width {
                    (line, Ok(record))
                } else {
                    (line, Err(Reason::Malformed(format!("{} fields where the header has {width}", record.len()))))
                }
            }
            Err(err) => {
                let line = line_at(err.position());
                let why = match err.kind() {
                    csv::ErrorKind::Utf8 { .. } => "a field is not UTF-8 text".to_owned(),
                    _ => "the record is not CSV".to_owned(),
                };
                (line, Err(Reason::Malformed(why)))
            }
        };
        rows.push(row);
    }
    Ok((columns, rows))
}

/// Reads the users file (`userId,email`): emails normalised as signup normalises them.
pub fn read_users(bytes: &[u8]) -> Result<Users, ExportError> {
    let (columns, records) = read(bytes, ExportFile::Users, &USER_COLUMNS)?;
    let mut users = Users::default();
    // Each user's first usable line, to name both lines of an ambiguity.
    let mut first_line: HashMap<String, u64> = HashMap::new();
    for (line, record) in records {
        let parsed = record.and_then(|fields| {
            let record = Record { fields: &fields, columns: &columns };
            let user = record.id("userId")?;
            let email = Email::parse("email", record.get("email")).map_err(|e| match e {
                Error::Validation(fields) => {
                    Reason::Malformed(fields.iter().map(|f| format!("{} {}", f.field, f.message)).collect())
                }
                other => Reason::Malformed(other.to_string()),
            });
            Ok((user, email))
        });
        let (user, email) = match parsed {
            Ok(pair) => pair,
            Err(reason) => {
                users.problems.push((line, reason));
                continue;
            }
        };
        let mapping = match email {
            Ok(email) => Mapping::Email(email),
            Err(reason) => {
                users.problems.push((line, reason));
                Mapping::Unusable { line }
            }
        };
        match users.mappings.get(&user) {
            None => {
                first_line.insert(user.clone(), line);
                users.mappings.insert(user, mapping);
            }
            // The same mapping again changes nothing.
            Some(existing) if *existing == mapping => {}
            Some(_) => {
                let first = first_line.get(&user).copied().unwrap_or(0);
                users.problems.push((line, Reason::Ambiguous { user: user.clone(), lines: (first, line) }));
                users.mappings.insert(user, Mapping::Ambiguous { lines: (first, line) });
            }
        }
    }
    Ok(users)
}

/// Reads the tokens file: each record a [`TokenRow`] or the reason it is not one.
pub fn read_tokens(bytes: &[u8]) -> Result<Vec<TokenLine>, ExportError> {
    let (columns, records) = read(bytes, ExportFile::Tokens, &TOKEN_COLUMNS)?;
    Ok(records
        .into_iter()
        .map(|(line, record)| {
            let fields = record.map_err(|reason| (line, reason))?;
            token_row(line, &Record { fields: &fields, columns: &columns }).map_err(|reason| (line, reason))
        })
        .collect())
}

fn token_row(line: u64, record: &Record<'_>) -> Result<TokenRow, Reason> {
    // The shape first: a row whose token is not one is reported as such, whatever else is wrong.
    let token = LegacyPat::parse(record.get("token")).ok_or(Reason::NotLegacyShape)?;
    let legacy_id = record.id("id")?;
    let name = Name::parse("name", record.get("name"))
        .map_err(|e| match e {
            Error::Validation(fields) => {
                Reason::Malformed(fields.iter().map(|f| format!("{} {}", f.field, f.message)).collect())
            }
            other => Reason::Malformed(other.to_string()),
        })?
        .as_str()
        .to_owned();
    let legacy_user = record.id("userId")?;
    let expires_at = record.instant("expiresAt")?;
    let last_used_at = record.instant("lastUsedAt")?;
    let created_at = record.instant("createdAt")?.ok_or_else(|| Reason::Malformed("createdAt is empty".to_owned()))?;
    // Not kept, but a value that is no date says the export is not what it should be.
    record.instant("updatedAt")?;
    Ok(TokenRow { line, legacy_id, name, token, legacy_user, expires_at, last_used_at, created_at })
}

/// `digits` ASCII digits at the start of `text`, as a number, and the rest.
fn number(text: &str, digits: usize) -> Option<(u32, &str)> {
    let head = text.get(..digits)?;
    if !head.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((head.parse().ok()?, &text[digits..]))
}

fn expect<'t>(text: &'t str, what: &[char]) -> Option<&'t str> {
    text.strip_prefix(what)
}

/// The dates a legacy export holds: RFC 3339 (`2025-11-06T12:34:56.789Z`, what JavaScript's
/// `toISOString` writes), and PostgreSQL's text forms (`2025-11-06 12:34:56.789` for a
/// `timestamp`, `…+00` or `…+05:30` for a `timestamptz`). `T`, `t` or a space between date and
/// time; an optional fraction of 1 to 9 digits; an offset `Z`, `±HH`, `±HHMM` or `±HH:MM`, or
/// none, which means UTC (the legacy schema stored UTC in columns without a zone).
pub fn parse_instant(text: &str) -> Option<OffsetDateTime> {
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some(at);
    }
    let (year, rest) = number(text, 4)?;
    let (month, rest) = number(expect(rest, &['-'])?, 2)?;
    let (day, rest) = number(expect(rest, &['-'])?, 2)?;
    let (hour, rest) = number(expect(rest, &['T', 't', ' '])?, 2)?;
    let (minute, rest) = number(expect(rest, &[':'])?, 2)?;
    let (second, mut rest) = number(expect(rest, &[':'])?, 2)?;
    let mut nanos = 0u32;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if !(1..=9).contains(&digits) {
            return None;
        }
        let (value, after) = number(fraction, digits)?;
        nanos = value * 10u32.pow(u32::try_from(9 - digits).ok()?);
        rest = after;
    }
    let offset = match rest {
        "" | "Z" | "z" => UtcOffset::UTC,
        _ => {
            let sign: i8 = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (hours, after) = number(&rest[1..], 2)?;
            let minutes = match after {
                "" => 0,
                _ => {
                    let (minutes, end) = number(after.strip_prefix(':').unwrap_or(after), 2)?;
                    if !end.is_empty() {
                        return None;
                    }
                    minutes
                }
            };
            let (hours, minutes) = (i8::try_from(hours).ok()?, i8::try_from(minutes).ok()?);
            UtcOffset::from_hms(sign * hours, sign * minutes, 0).ok()?
        }
    };
    let month = Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date = Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?).ok()?;
    let time =
        Time::from_hms_nano(u8::try_from(hour).ok()?, u8::try_from(minute).ok()?, u8::try_from(second).ok()?, nanos)
            .ok()?;
    Some(PrimitiveDateTime::new(date, time).assume_offset(offset))
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const TOKEN: &str = "af_live_0123456789ABCDEFGHIJKLMNOPQRSTUv";
    const HEADER: &str = "id,name,token,userId,expiresAt,lastUsedAt,createdAt,updatedAt\n";

    #[test]
    fn legacy_date_forms() {
        let at = datetime!(2025-11-06 12:34:56.789 UTC);
        for text in [
            "2025-11-06T12:34:56.789Z",
            "2025-11-06t12:34:56.789z",
            "2025-11-06 12:34:56.789",
            "2025-11-06T12:34:56.789",
            "2025-11-06 12:34:56.789+00",
            "2025-11-06 14:34:56.789+02",
            "2025-11-06 14:34:56.789+0200",
            "2025-11-06T14:34:56.789+02:00",
            "2025-11-06 07:04:56.789-05:30",
            "2025-11-06 12:34:56.789000",
        ] {
            assert_eq!(parse_instant(text), Some(at), "{text}");
        }
        assert_eq!(parse_instant("2025-11-06 12:34:56"), Some(datetime!(2025-11-06 12:34:56 UTC)));
        for bad in [
            "",
            "2025-11-06",
            "2025-11-06 12:34",
            "2025-13-06 12:34:56",
            "2025-02-30 12:34:56",
            "2025-11-06 25:00:00",
            "2025-11-06 12:34:56.",
            "2025-11-06 12:34:56.1234567890",
            "2025-11-06 12:34:56 +02:00",
            "2025-11-06 12:34:56+2",
            "2025-11-06 12:34:56+02:0",
            "2025-11-06 12:34:56+02:00x",
            "06/11/2025 12:34:56",
            "1762432496",
            "next tuesday",
        ] {
            assert_eq!(parse_instant(bad), None, "{bad}");
        }
    }

    #[test]
    fn rows_with_quotes_nulls_and_any_column_order() {
        let csv = format!(
            "\u{feff}userId,Token,id,name,createdAt,updatedAt,expiresAt,lastUsedAt\n\
             u1,{TOKEN},t1,\"deploy, prod\",2025-01-02 03:04:05.678,2025-01-02 03:04:05.678,,\"\"\n\
             \n\
             u2,\"{TOKEN}\",t2,\"a quoted \"\"name\"\" over\ntwo lines\",2025-01-02T03:04:05Z,,2026-01-01T00:00:00Z,2025-06-01 00:00:00\n"
        );
        let rows = read_tokens(csv.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows.len(), 2);
        let first = rows[0].as_ref().unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((first.line, first.legacy_id.as_str(), first.name.as_str()), (2, "t1", "deploy, prod"));
        assert_eq!(first.token.expose(), TOKEN);
        assert_eq!((first.expires_at, first.last_used_at), (None, None));
        assert_eq!(first.created_at, datetime!(2025-01-02 03:04:05.678 UTC));
        // A name with a line break is refused, and reported at the line its record starts on.
        assert!(matches!(&rows[1], Err((4, Reason::Malformed(why))) if why.starts_with("name")), "{:?}", rows[1]);
    }

    #[test]
    fn every_bad_row_says_why_without_showing_its_token() {
        let good = |id: &str| format!("{id},ok,{TOKEN},u1,,,2025-01-02 03:04:05,");
        let csv = [
            HEADER.trim_end().to_owned(),
            good("t1"),
            format!("t2,ok,{TOKEN},u1,,,2025-01-02 03:04:05"),
            format!("t3,ok,{},u1,,,2025-01-02 03:04:05,", &TOKEN[..39]),
            "t4,ok,ghp_16C7e42F292c6912E7710c838347Ae178B4a,u1,,,2025-01-02 03:04:05,".to_owned(),
            format!(",ok,{TOKEN},u1,,,2025-01-02 03:04:05,"),
            format!("t6,,{TOKEN},u1,,,2025-01-02 03:04:05,"),
            format!("t7,ok,{TOKEN},,,,2025-01-02 03:04:05,"),
            format!("t8,ok,{TOKEN},u1,soon,,2025-01-02 03:04:05,"),
            format!("t9,ok,{TOKEN},u1,,,,"),
            format!("t10,ok,{TOKEN},u1,,,2025-01-02 03:04:05,{TOKEN}"),
            format!("t11,\"unterminated,{TOKEN},u1,,,2025-01-02 03:04:05,"),
        ]
        .join("\n");
        let rows = read_tokens(csv.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let reasons: Vec<(u64, String)> = rows
            .iter()
            .map(|row| match row {
                Ok(row) => (row.line, "ok".to_owned()),
                Err((line, reason)) => (*line, reason.to_string()),
            })
            .collect();
        let expected = [
            (2, "ok"),
            (3, "malformed row: 7 fields where the header has 8"),
            (4, "the token does not have the legacy shape"),
            (5, "the token does not have the legacy shape"),
            (6, "malformed row: id is empty"),
            (7, "malformed row: name is required"),
            (8, "malformed row: userId is empty"),
            (9, "malformed row: expiresAt is not a date"),
            (10, "malformed row: createdAt is empty"),
            (11, "malformed row: updatedAt is not a date"),
            (12, "malformed row: "),
        ];
        assert_eq!(reasons.len(), expected.len(), "{reasons:?}");
        for ((line, reason), (want_line, want)) in reasons.iter().zip(expected) {
            assert_eq!(*line, want_line, "{reasons:?}");
            assert!(reason.starts_with(want), "line {line}: {reason}");
            assert!(!reason.contains(&TOKEN[8..]), "line {line} shows a token: {reason}");
        }
    }

    #[test]
    fn crlf_lines_and_bytes_that_are_not_text() {
        let mut csv = HEADER.replace('\n', "\r\n").into_bytes();
        csv.extend_from_slice(b"t1,caf\xE9,");
        csv.extend_from_slice(TOKEN.as_bytes());
        csv.extend_from_slice(b",u1,,,2025-01-02 03:04:05,\r\n\r\nt2,ok,");
        csv.extend_from_slice(TOKEN.as_bytes());
        csv.extend_from_slice(b",u1,,,2025-01-02 03:04:05,\r\n");
        let rows = read_tokens(&csv).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert!(
            matches!(&rows[0], Err((2, Reason::Malformed(why))) if why == "a field is not UTF-8 text"),
            "{:?}",
            rows[0]
        );
        assert!(matches!(&rows[1], Ok(row) if row.line == 4 && row.legacy_id == "t2"), "{:?}", rows[1]);
    }

    #[test]
    fn headers_are_checked() {
        for (csv, why) in [
            ("", "the file is empty"),
            ("id,name,token,userId,expiresAt,lastUsedAt,createdAt\n", "column `updatedAt` is missing"),
            ("id,name,token,userId,expiresAt,lastUsedAt,createdAt,updatedAt,extra\n", "unexpected column `extra`"),
            ("id,id,name,token,userId,expiresAt,lastUsedAt,createdAt,updatedAt\n", "column `id` appears twice"),
            ("userId,email\n", "unexpected column `email`"),
        ] {
            let err = read_tokens(csv.as_bytes()).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.starts_with("tokens file: bad header: ") && err.contains(why), "{csv:?}: {err}");
        }
        assert!(read_tokens(HEADER.as_bytes()).is_ok_and(|rows| rows.is_empty()));
        let err = read_users(b"email,userId,name\n").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("users file: bad header: unexpected column `name`"), "{err}");
    }

    #[test]
    fn users_map_normalised_emails_and_refuse_ambiguity() {
        let csv = "userId,email\n\
                   u1, Ada@Example.COM \n\
                   u2,not-an-email\n\
                   u1,ada@example.com\n\
                   u3,bob@example.com\n\
                   u3,carol@example.com\n\
                   ,dave@example.com\n\
                   u4,af_live_0123456789ABCDEFGHIJKLMNOPQRSTUv\n";
        let users = read_users(csv.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(users.mappings.get("u1"), Some(Mapping::Email(e)) if e.as_str() == "ada@example.com"));
        assert_eq!(users.mappings.get("u2"), Some(&Mapping::Unusable { line: 3 }));
        assert_eq!(users.mappings.get("u3"), Some(&Mapping::Ambiguous { lines: (5, 6) }));
        let problems: Vec<(u64, String)> = users.problems.iter().map(|(l, r)| (*l, r.to_string())).collect();
        assert_eq!(problems.iter().map(|p| p.0).collect::<Vec<_>>(), [3, 6, 7, 8], "{problems:?}");
        assert!(problems[0].1.contains("email is not a valid email address"), "{problems:?}");
        assert!(problems[1].1.contains("two different emails (users lines 5 and 6)"), "{problems:?}");
        assert!(problems[2].1.contains("userId is empty"), "{problems:?}");
        assert!(!problems[3].1.contains("0123456789ABCDEF"), "{problems:?}");
    }

    #[test]
    fn shown_values_never_carry_tokens() {
        assert_eq!(shown("clx0user"), "clx0user");
        assert_eq!(shown(&format!("x{TOKEN}")), "(withheld: it looks like a token)");
        assert_eq!(shown(&"u".repeat(70)).chars().count(), 65);
        let reason = Reason::UnknownLegacyUser(TOKEN.to_owned()).to_string();
        assert!(!reason.contains(&TOKEN[8..]), "{reason}");
    }
}
