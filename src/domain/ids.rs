//! Identifiers: opaque strings of 1 to 128 characters from `[A-Za-z0-9._:-]`, validated once
//! when they enter the system.

use std::fmt;
use std::sync::Arc;

/// The longest identifier accepted, in bytes (all accepted characters are one byte).
pub const MAX_ID_LEN: usize = 128;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_ID_LEN} characters, got {length}")]
    TooLong { length: usize },
    #[error("may contain only A-Z, a-z, 0-9, '.', '_', ':' and '-', got {character:?}")]
    InvalidCharacter { character: char },
}

/// A validated identifier. Cloning is cheap: the text is shared.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identifier(Arc<str>);

impl Identifier {
    pub fn parse(text: &str) -> Result<Identifier, IdError> {
        if text.is_empty() {
            return Err(IdError::Empty);
        }
        if let Some(character) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
        {
            return Err(IdError::InvalidCharacter { character });
        }
        if text.len() > MAX_ID_LEN {
            return Err(IdError::TooLong { length: text.len() });
        }
        Ok(Identifier(Arc::from(text)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Identifier {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, formatter)
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

macro_rules! identifier_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Identifier);

        impl $name {
            pub fn parse(text: &str) -> Result<$name, IdError> {
                Identifier::parse(text).map($name)
            }

            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(formatter, "{}({:?})", stringify!($name), self.0.as_str())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(self.0.as_str())
            }
        }

        /// Hashes and compares as its text, so a set of ids can be searched with a `&str`.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                self.0.as_str()
            }
        }
    };
}

identifier_newtype!(
    /// A product, as the store backends name it.
    ProductId
);
identifier_newtype!(
    /// A store (or warehouse).
    StoreId
);
identifier_newtype!(
    /// The customer a reservation is held for.
    CustomerId
);
identifier_newtype!(
    /// The order a committed reservation became.
    OrderId
);
identifier_newtype!(
    /// A client's idempotency key for one command.
    CommandId
);
identifier_newtype!(
    /// A transfer of goods between two stores: given by the client or a UUID made by the server.
    TransferId
);

/// A reservation: given by the client or a UUID made by the server.
///
/// Every reservation id is kept as long as the server runs (so a reused id is refused), and
/// most are UUIDs the server made. One in the canonical text form of a UUID (36 characters,
/// lowercase hexadecimal, hyphenated) is therefore held as its 16 bytes instead of a shared
/// string: no allocation, and cheap to hash and compare. Any other valid identifier is held as
/// text. The form is chosen from the text alone, so one text always gets the same form, and
/// equality, hashing and ordering (by text) behave as for any identifier.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ReservationId(ReservationIdForm);

#[derive(Clone, PartialEq, Eq, Hash)]
enum ReservationIdForm {
    /// The bytes of a UUID whose text is canonical, big-endian (the text's order).
    Uuid([u8; 16]),
    Text(Identifier),
}

/// The length of a UUID's canonical text form.
const UUID_TEXT_LEN: usize = 36;
const UUID_HYPHENS: [usize; 4] = [8, 13, 18, 23];

impl ReservationId {
    pub fn parse(text: &str) -> Result<ReservationId, IdError> {
        if let Some(bytes) = canonical_uuid_bytes(text) {
            return Ok(ReservationId(ReservationIdForm::Uuid(bytes)));
        }
        Identifier::parse(text).map(|text| ReservationId(ReservationIdForm::Text(text)))
    }

    /// The id of a UUID made by the server (its canonical text form).
    pub fn from_uuid(uuid: u128) -> ReservationId {
        ReservationId(ReservationIdForm::Uuid(uuid.to_be_bytes()))
    }

    /// The id's text. A UUID's text is written into the returned value, so it borrows nothing.
    pub fn as_str(&self) -> ReservationIdText<'_> {
        match &self.0 {
            ReservationIdForm::Uuid(bytes) => ReservationIdText::Uuid(uuid_text(bytes)),
            ReservationIdForm::Text(text) => ReservationIdText::Text(text.as_str()),
        }
    }
}

impl Ord for ReservationId {
    fn cmp(&self, other: &ReservationId) -> std::cmp::Ordering {
        match (&self.0, &other.0) {
            // Fixed-width lowercase hexadecimal with hyphens in fixed places sorts as the bytes.
            (ReservationIdForm::Uuid(a), ReservationIdForm::Uuid(b)) => a.cmp(b),
            (ReservationIdForm::Text(a), ReservationIdForm::Text(b)) => a.cmp(b),
            _ => (*self.as_str()).cmp(&*other.as_str()),
        }
    }
}

impl PartialOrd for ReservationId {
    fn partial_cmp(&self, other: &ReservationId) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for ReservationId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "ReservationId({:?})", &*self.as_str())
    }
}

impl fmt::Display for ReservationId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.as_str())
    }
}

/// The text of a [`ReservationId`]: borrowed, or written out from a UUID's bytes.
pub enum ReservationIdText<'a> {
    Uuid([u8; UUID_TEXT_LEN]),
    Text(&'a str),
}

impl std::ops::Deref for ReservationIdText<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            ReservationIdText::Uuid(text) => {
                std::str::from_utf8(text).expect("a UUID's text is ASCII")
            }
            ReservationIdText::Text(text) => text,
        }
    }
}

/// The 16 bytes of `text` if it is a UUID in canonical form (lowercase, hyphenated).
fn canonical_uuid_bytes(text: &str) -> Option<[u8; 16]> {
    let text = text.as_bytes();
    if text.len() != UUID_TEXT_LEN || UUID_HYPHENS.iter().any(|&at| text[at] != b'-') {
        return None;
    }
    let mut bytes = [0u8; 16];
    let mut digits = text
        .iter()
        .enumerate()
        .filter(|(at, _)| !UUID_HYPHENS.contains(at))
        .map(|(_, digit)| match digit {
            b'0'..=b'9' => Some(digit - b'0'),
            b'a'..=b'f' => Some(digit - b'a' + 10),
            _ => None,
        });
    for byte in &mut bytes {
        let high = digits.next()??;
        let low = digits.next()??;
        *byte = high << 4 | low;
    }
    Some(bytes)
}

fn uuid_text(bytes: &[u8; 16]) -> [u8; UUID_TEXT_LEN] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [b'-'; UUID_TEXT_LEN];
    let mut at = 0;
    for byte in bytes {
        if UUID_HYPHENS.contains(&at) {
            at += 1;
        }
        text[at] = HEX[usize::from(byte >> 4)];
        text[at + 1] = HEX[usize::from(byte & 0x0f)];
        at += 2;
    }
    text
}

/// One stock item's stream of events: a product in a store.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct StreamKey {
    pub product_id: ProductId,
    pub store_id: StoreId,
}

impl StreamKey {
    pub fn new(product_id: ProductId, store_id: StoreId) -> StreamKey {
        StreamKey {
            product_id,
            store_id,
        }
    }
}

impl fmt::Display for StreamKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}@{}", self.product_id, self.store_id)
    }
}

/// An event's unique id: the 128 bits of a UUID made outside the domain.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct EventId(pub u128);

/// What makes a command id unique: the id within its sender's names. Two credentials may each
/// use the same `command_id` without either noticing the other; a retry by the same one is
/// answered as the original. `None`: an event written before actors were recorded.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct CommandKey {
    pub actor: Option<Actor>,
    pub command_id: CommandId,
}

impl CommandKey {
    /// The key as a shared log stores it (its unique `command_id` column): `actor/command_id`
    /// (a command id holds no `/`), or the bare id for an event without an actor.
    pub fn stored(&self) -> String {
        match &self.actor {
            Some(actor) => format!("{}/{}", actor.as_str(), self.command_id.as_str()),
            None => self.command_id.as_str().to_owned(),
        }
    }

    /// The key [`CommandKey::stored`] wrote, if `text` is one.
    pub fn parse_stored(text: &str) -> Option<CommandKey> {
        let (actor, id) = match text.rsplit_once('/') {
            Some((actor, id)) => (Some(Actor::from(actor)), id),
            None => (None, text),
        };
        Some(CommandKey {
            actor,
            command_id: CommandId::parse(id).ok()?,
        })
    }
}

/// Who caused an event: the name of the credential that sent its command, or
/// [`Actor::system`] for what the server appends by itself. A name, not an identifier: it is
/// whatever the credential is called (an identity provider's subject may hold `|` or `@`).
/// Cloning is cheap: the text is shared.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Actor(Arc<str>);

impl Actor {
    /// The name of events nobody sent: expiries and stock alerts.
    pub const SYSTEM: &'static str = "system";

    pub fn system() -> Actor {
        static SYSTEM: std::sync::LazyLock<Actor> =
            std::sync::LazyLock::new(|| Actor(Actor::SYSTEM.into()));
        SYSTEM.clone()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<Arc<str>> for Actor {
    fn from(name: Arc<str>) -> Actor {
        Actor(name)
    }
}

impl From<&str> for Actor {
    fn from(name: &str) -> Actor {
        Actor(name.into())
    }
}

impl fmt::Debug for Actor {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Actor({:?})", &*self.0)
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}
