//! The events the load sends: WhatsApp Cloud API inbound text messages of exactly
//! [`BODY_LEN`] bytes, each with a unique message id, spread over [`CONVERSATIONS`] customers
//! of one business number (so Meta's default ordering key gives that many conversations), and
//! signed as Meta signs them: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`
//! with the app secret.

use bytes::Bytes;
use hmac::{Hmac, Mac as _};
use http::HeaderValue;
use platform::clock::{Clock as _, SystemClock};
use sha2::Sha256;

/// The size of every event body.
pub const BODY_LEN: usize = 1024;
/// Customers writing to the business number: the conversations events are ordered in.
pub const CONVERSATIONS: u64 = 50;
/// What the customers write, repeated to fill the body to [`BODY_LEN`].
const TEXT: &str = "Hello! I ordered a pair of running shoes last week and the tracking page still says the \
                    parcel is waiting at the depot. Could you tell me when it will be delivered? ";

/// Makes the run's events; every one differs (its message id), so none is a replay.
pub struct Events {
    secret: Vec<u8>,
    /// Tells this run's message ids apart from an earlier run's against the same gateway.
    run: String,
    /// The text filling each body to [`BODY_LEN`].
    text: String,
}

impl Events {
    pub fn new(secret: &str) -> Self {
        let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let mut events = Self { secret: secret.as_bytes().to_vec(), run, text: String::new() };
        let room = BODY_LEN.checked_sub(events.body(0).len()).expect("the event's fixed part fits in BODY_LEN");
        events.text = TEXT.chars().cycle().take(room).collect();
        events
    }

    fn body(&self, n: u64) -> String {
        let customer = format!("49151{:08}", n % CONVERSATIONS);
        let timestamp = SystemClock.now().unix_timestamp();
        format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","changes":[{{"value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550783881","phone_number_id":"106540352242922"}},"contacts":[{{"profile":{{"name":"Customer {customer}"}},"wa_id":"{customer}"}}],"messages":[{{"from":"{customer}","id":"wamid.bench{}{n:012}","timestamp":"{timestamp:010}","text":{{"body":"{}"}},"type":"text"}}]}},"field":"messages"}}]}}]}}"#,
            self.run, self.text
        )
    }

    /// Event `n`: its body and its `X-Hub-Signature-256` value.
    pub fn event(&self, n: u64) -> (Bytes, HeaderValue) {
        let body = self.body(n);
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key");
        mac.update(body.as_bytes());
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        (Bytes::from(body), HeaderValue::try_from(signature).expect("hex is a header value"))
    }
}
