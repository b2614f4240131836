//! Property tests for the path rules of SPEC §6: paths generated from the configured prefixes
//! with random percent-encodings (of every class, in either hex case), `;params`, `//`, `/./`,
//! `/../`, trailing slashes and letter case. Whenever the gateway accepts a path, the route it
//! picks for its normalised form is the route an independent oracle (a decoding server: strip
//! `;` parameters, percent-decode everything, remove dot segments as RFC 3986 §5.2.4 says)
//! picks, both case-sensitively and case-insensitively.

use proptest::prelude::*;

use crate::{config::routes::RoutesFile, routing::RouteTable};

const UP: &str = "upstream = \"http://127.0.0.1:9001\"";

fn table() -> RouteTable {
    let file = format!(
        "[[routes]]\nprefix = \"/v1/user\"\n{UP}\n\n\
         [[routes]]\nprefix = \"/v1/user/orders\"\n{UP}\nscopes = [\"orders:read\"]\n\n\
         [[routes]]\nprefix = \"/v1/user/orders/archive\"\n{UP}\nroles = [\"admin\"]\n\n\
         [[routes]]\nprefix = \"/v1/sdk/items\"\n{UP}\n\n\
         [[routes]]\nprefix = \"/v1/public\"\n{UP}\nauth = [\"none\"]\n\n\
         [[routes]]\nprefix = \"/v1/public/admin\"\n{UP}\nauth = [\"user\"]\n"
    );
    RoutesFile::parse(&file).unwrap_or_else(|e| panic!("{e}")).routes
}

const PREFIXES: [&str; 6] =
    ["/v1/user", "/v1/user/orders", "/v1/user/orders/archive", "/v1/sdk/items", "/v1/public", "/v1/public/admin"];
const TAILS: [&str; 6] = ["", "/7", "/archive", "/admin", "/orders/7", "/a.b~c-d_e"];
/// One representative of each class of SPEC §6: unreserved (decoded), refused, kept encoded.
const ENCODED: [&str; 18] = [
    "%41", "%7a", "%2D", "%5f", "%7E", "%30", // unreserved other than `.`
    "%2F", "%2e", "%5C", "%25", "%3b", "%00", "%1F", "%7f", // refused
    "%40", "%2b", "%20", "%C3%A9", // kept encoded
];

/// The gateway's answer: the path it routes and forwards, or `None` when it refuses.
fn gateway_path(table: &RouteTable, raw: &str) -> Option<String> {
    let normalised = super::normalise(raw).ok()?;
    table.case_conflict(&normalised).is_none().then(|| normalised.into_owned())
}

fn percent_decode(raw: &str) -> String {
    percent_encoding::percent_decode_str(raw).decode_utf8_lossy().into_owned()
}

/// RFC 3986 §5.2.4, on an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut input = path.to_owned();
    let mut output = String::new();
    while !input.is_empty() {
        if let Some(rest) = input.strip_prefix("../").or_else(|| input.strip_prefix("./")) {
            input = rest.to_owned();
        } else if input.starts_with("/./") {
            input.replace_range(..3, "/");
        } else if input == "/." {
            input = "/".to_owned();
        } else if input.starts_with("/../") || input == "/.." {
            input = if input == "/.." { "/".to_owned() } else { input[3..].to_owned() };
            match output.rfind('/') {
                Some(cut) => output.truncate(cut),
                None => output.clear(),
            }
        } else if input == "." || input == ".." {
            input.clear();
        } else {
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |i| i + start);
            output.push_str(&input[..end]);
            input.replace_range(..end, "");
        }
    }
    output
}

/// What a decoding server makes of the path.
fn oracle(raw: &str) -> String {
    let stripped: Vec<&str> = raw.split('/').map(|segment| segment.split(';').next().unwrap_or_default()).collect();
    remove_dot_segments(&percent_decode(&stripped.join("/")))
}

fn route(table: &RouteTable, path: &str) -> Option<String> {
    table.match_route(path).map(|r| r.prefix.clone())
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Percent-encode the character at this position, in upper- or lower-case hex.
    Encode(usize, bool),
    /// Insert one of [`ENCODED`].
    Insert(usize, usize),
    Params(usize),
    DoubleSlash(usize),
    DotSegment(usize),
    DotDotSegment(usize),
    TrailingSlash,
    UpperCase(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<bool>()).prop_map(|(at, upper)| Mutation::Encode(at, upper)),
        (any::<usize>(), 0..ENCODED.len()).prop_map(|(at, which)| Mutation::Insert(at, which)),
        any::<usize>().prop_map(Mutation::Params),
        any::<usize>().prop_map(Mutation::DoubleSlash),
        any::<usize>().prop_map(Mutation::DotSegment),
        any::<usize>().prop_map(Mutation::DotDotSegment),
        Just(Mutation::TrailingSlash),
        any::<usize>().prop_map(Mutation::UpperCase),
    ]
}

/// Byte offsets of the path's `/`s (never the first one, so the path stays absolute).
fn slash_at(path: &str, pick: usize) -> Option<usize> {
    let slashes: Vec<usize> = path.match_indices('/').map(|(i, _)| i).skip(1).collect();
    (!slashes.is_empty()).then(|| slashes[pick % slashes.len()])
}

fn char_at(path: &str, pick: usize) -> Option<(usize, char)> {
    let chars: Vec<(usize, char)> = path.char_indices().filter(|(i, c)| *i > 0 && *c != '/' && *c != '%').collect();
    (!chars.is_empty()).then(|| chars[pick % chars.len()])
}

fn apply(path: &mut String, mutation: &Mutation) {
    match *mutation {
        Mutation::Encode(pick, upper) => {
            if let Some((at, c)) = char_at(path, pick) {
                let encoded = if upper { format!("%{:02X}", c as u32) } else { format!("%{:02x}", c as u32) };
                path.replace_range(at..at + c.len_utf8(), &encoded);
            }
        }
        Mutation::Insert(pick, which) => {
            let at = char_at(path, pick).map_or(path.len(), |(at, _)| at);
            path.insert_str(at, ENCODED[which]);
        }
        Mutation::Params(pick) => {
            let at = slash_at(path, pick).unwrap_or(path.len());
            path.insert_str(at, ";jsessionid=1");
        }
        Mutation::DoubleSlash(pick) => {
            let at = slash_at(path, pick).unwrap_or(path.len());
            path.insert(at, '/');
        }
        Mutation::DotSegment(pick) => {
            let at = slash_at(path, pick).unwrap_or(path.len());
            path.insert_str(at, "/.");
        }
        Mutation::DotDotSegment(pick) => {
            let at = slash_at(path, pick).unwrap_or(path.len());
            path.insert_str(at, "/x/..");
        }
        Mutation::TrailingSlash => path.push('/'),
        Mutation::UpperCase(pick) => {
            if let Some((at, c)) = char_at(path, pick).filter(|(_, c)| c.is_ascii_lowercase()) {
                path.replace_range(at..at + 1, &c.to_ascii_uppercase().to_string());
            }
        }
    }
}

fn spelled() -> impl Strategy<Value = String> {
    (0..PREFIXES.len(), 0..TAILS.len(), proptest::collection::vec(mutation(), 0..5)).prop_map(
        |(prefix, tail, mutations)| {
            let mut path = format!("{}{}", PREFIXES[prefix], TAILS[tail]);
            for mutation in &mutations {
                apply(&mut path, mutation);
            }
            path
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn an_accepted_path_routes_as_a_decoding_server_reads_it(raw in spelled()) {
        let table = table();
        if let Some(normalised) = gateway_path(&table, &raw) {
            let decoded = oracle(&raw);
            prop_assert_eq!(route(&table, &normalised), route(&table, &decoded), "{} → {}", raw, normalised);
            prop_assert_eq!(
                route(&table, &normalised),
                route(&table, &decoded.to_ascii_lowercase()),
                "case-insensitive upstream: {} → {}", raw, normalised
            );
        }
    }
}

#[test]
fn the_generators_reach_every_outcome() {
    let table = table();
    let examples = [
        ("/v1/user/%6Frders/7", Some("/v1/user/orders/7")),
        ("/v1/public/%61dmin", Some("/v1/public/admin")),
        ("/v1/user/orders;x/7", None),
        ("/v1/user/orders/", Some("/v1/user/orders/")),
        ("/v1/user/a%40b", Some("/v1/user/a%40b")),
    ];
    for (raw, expected) in examples {
        assert_eq!(gateway_path(&table, raw).as_deref(), expected, "{raw}");
    }
}

#[test]
fn the_oracle_decodes_strips_and_removes_dots() {
    assert_eq!(oracle("/v1/user/%6Frders;x=1/7"), "/v1/user/orders/7");
    assert_eq!(oracle("/v1/public/x/../admin"), "/v1/public/admin");
    assert_eq!(oracle("/v1/./user/orders/."), "/v1/user/orders/");
    assert_eq!(remove_dot_segments("/a/b/c/./../../g"), "/a/g");
    assert_eq!(remove_dot_segments("/mid/content=5/../6"), "/mid/6");
}
