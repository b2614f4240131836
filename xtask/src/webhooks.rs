//! `cargo xtask webhooks dead list <source> | show <source> <name> | replay <source> <name|--all>`:
//! the dead letters of a webhook source, read through their index where the gateway keeps
//! them (configured by the same environment as the gateway: `AMQP_URL`, `REDIS_URL`,
//! `REDIS_KEY_PREFIX`, `DATA_DIR`). A replay puts the event back in its source's queue with
//! its attempts starting over; the running gateway delivers it.

use gateway::{DeadLetter, DeadLetterAdmin, WebhookStore};
use platform::env::OsEnv;

const USAGE: &str =
    "usage: cargo xtask webhooks dead <list <source> | show <source> <name> | replay <source> <name | --all>>";

/// Unix milliseconds as RFC 3339.
fn when(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

fn summary(name: &str, letter: &DeadLetter) -> String {
    let event = &letter.event;
    format!(
        "{name}\tid={}\tkey={}\tsequence={}\tattempts={}\tdead_at={}\treason={}",
        event.id,
        event.key.as_deref().unwrap_or("-"),
        event.sequence,
        event.attempt + 1,
        when(letter.dead_at_ms),
        letter.reason
    )
}

/// The dead letter as JSON, its body as text when it is UTF-8 (else base64).
fn detail(name: &str, letter: &DeadLetter) -> Result<String, String> {
    let mut value = serde_json::to_value(letter).map_err(|e| e.to_string())?;
    if let Ok(body) = letter.event.body()
        && let Ok(text) = std::str::from_utf8(&body)
    {
        value["event"]["body"] = serde_json::Value::String(text.to_owned());
        value["event"]["body_encoding"] = serde_json::Value::String("utf-8".to_owned());
    }
    value["name"] = serde_json::Value::String(name.to_owned());
    serde_json::to_string_pretty(&value).map_err(|e| e.to_string())
}

pub async fn run(args: &[&str]) -> Result<(), String> {
    let config = WebhookStore::from_env(&OsEnv).map_err(|e| e.to_string())?;
    let admin = DeadLetterAdmin::open(&config).await?;
    let result = dead(&admin, args).await;
    admin.close();
    result
}

async fn dead(admin: &DeadLetterAdmin, args: &[&str]) -> Result<(), String> {
    match args {
        ["dead", "list", source] => {
            let letters = admin.list(source).await.map_err(|e| e.to_string())?;
            eprintln!("{} dead letter(s) of {source} in {}", letters.len(), admin.location);
            for (name, letter) in &letters {
                println!("{}", summary(name, letter));
            }
            Ok(())
        }
        ["dead", "show", source, name] => match admin.show(source, name).await.map_err(|e| e.to_string())? {
            Some(letter) => {
                println!("{}", detail(name, &letter)?);
                Ok(())
            }
            None => Err(format!("{source} has no dead letter named {name}")),
        },
        ["dead", "replay", source, "--all"] => {
            let letters = admin.list(source).await.map_err(|e| e.to_string())?;
            let mut replayed = 0;
            for (name, _) in &letters {
                if admin.replay(source, name).await.map_err(|e| format!("{name}: {e}"))? {
                    replayed += 1;
                }
            }
            println!("{replayed} dead letter(s) of {source} put back in its queue");
            Ok(())
        }
        ["dead", "replay", source, name] => {
            if admin.replay(source, name).await.map_err(|e| e.to_string())? {
                println!("{name} put back in the queue of {source}");
                Ok(())
            } else {
                Err(format!("{source} has no dead letter named {name}"))
            }
        }
        _ => Err(USAGE.to_owned()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::PathBuf;

    use gateway::StoredEvent;

    use super::*;

    fn letter(id: &str) -> DeadLetter {
        let event = StoredEvent::new(id.to_owned(), "chat".to_owned(), 1_767_225_600, None, Vec::new(), b"{\"n\":1}")
            .ordered(Some("conv-7".to_owned()), 12);
        DeadLetter { event, reason: "3 attempts failed; the last: the upstream answered 503".to_owned(), dead_at_ms: 1 }
    }

    fn spool_store(data_dir: PathBuf) -> WebhookStore {
        WebhookStore { redis_url: None, redis_key_prefix: "unused:".to_owned(), data_dir, amqp: None }
    }

    #[tokio::test]
    async fn dead_letters_are_listed_shown_and_replayed_from_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let dead_dir = dir.path().join("webhooks").join("chat").join("dead");
        std::fs::create_dir_all(&dead_dir).unwrap();
        std::fs::write(dead_dir.join("evt-1.json"), serde_json::to_vec(&letter("evt-1")).unwrap()).unwrap();
        let admin = DeadLetterAdmin::open(&spool_store(dir.path().to_owned())).await.unwrap();

        let listed = admin.list("chat").await.unwrap();
        assert_eq!(listed.len(), 1);
        let line = summary(&listed[0].0, &listed[0].1);
        assert!(line.starts_with("evt-1\tid=evt-1\tkey=conv-7\tsequence=12\tattempts=1"), "{line}");
        let shown = detail("evt-1", &admin.show("chat", "evt-1").await.unwrap().unwrap()).unwrap();
        assert!(shown.contains("\"body\": \"{\\\"n\\\":1}\""), "{shown}");
        assert!(dead(&admin, &["dead", "show", "chat", "nope"]).await.is_err());

        dead(&admin, &["dead", "replay", "chat", "evt-1"]).await.unwrap();
        assert!(admin.list("chat").await.unwrap().is_empty(), "taken out of the dead letters");
        // Back in the source's queue, as a spool file the gateway picks up.
        let queued: Vec<StoredEvent> = std::fs::read_dir(dir.path().join("webhooks").join("chat"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect();
        assert_eq!(queued.len(), 1);
        assert_eq!((queued[0].id.as_str(), queued[0].attempt, queued[0].sequence), ("evt-1", 0, 12));
        assert!(dead(&admin, &["dead", "replay", "chat", "evt-1"]).await.is_err(), "only once");
    }
}
