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
    /// A reservation: given by the client or a UUID made by the server.
    ReservationId
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
