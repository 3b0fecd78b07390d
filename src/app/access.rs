//! Who may do what: principals, their roles and store scopes, and the API tokens that name
//! them. The gRPC layer extracts a [`Principal`] from each request's credential; every
//! decision about what it may do is made here (and, for the stores a command touches, by the
//! command writer against its state, through [`StoreScope`]).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use crate::app::jwt::{JwtVerifier, looks_like_jwt};
use crate::app::subscription::EventFilter;
use crate::domain::{Actor, Command, DomainError, Inventory, StoreId};

/// What a principal may do, by kind of request.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Role {
    /// Everything.
    Admin,
    /// Every stock command, queries, subscriptions.
    Operator,
    /// Reserve, commit, release and extend reservations; queries; subscriptions.
    Sales,
    /// Queries and subscriptions.
    Reader,
    /// Subscriptions only: what a following query server needs to copy the whole log.
    Replica,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Operator,
        Role::Sales,
        Role::Reader,
        Role::Replica,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Sales => "sales",
            Role::Reader => "reader",
            Role::Replica => "replica",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.name() == text)
    }

    fn may(self, action: Action) -> bool {
        matches!(
            (self, action),
            (Role::Admin, _)
                | (Role::Operator, Action::SalesCommand | Action::StockCommand)
                | (Role::Operator, Action::Query | Action::Subscribe)
                | (_, Action::Describe)
                | (
                    Role::Sales,
                    Action::SalesCommand | Action::Query | Action::Subscribe
                )
                | (Role::Reader, Action::Query | Action::Subscribe)
                | (Role::Replica, Action::Subscribe)
        )
    }
}

impl fmt::Display for Role {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// The kinds of request a role is checked against.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Action {
    /// Reserve, commit, release, extend.
    SalesCommand,
    /// Every other command: receipts, adjustments, removals, moves, policies, counts, transfers.
    StockCommand,
    /// A query.
    Query,
    /// A subscription to events (filtered to the principal's stores).
    Subscribe,
    /// Reflection: what services and messages the server has.
    Describe,
    /// Operating the outbound sinks (`DeliveryService`): admins only.
    Administer,
}

impl Action {
    fn describe(self) -> &'static str {
        match self {
            Action::SalesCommand => "reservation commands",
            Action::StockCommand => "stock commands",
            Action::Query => "queries",
            Action::Subscribe => "subscriptions",
            Action::Describe => "reflection",
            Action::Administer => "operating the outbound sinks",
        }
    }
}

/// The stores a principal may act on and see.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum StoreScope {
    All,
    Only(Arc<BTreeSet<StoreId>>),
}

impl StoreScope {
    /// `stores`, or every store when it is empty.
    pub fn of(stores: impl IntoIterator<Item = StoreId>) -> StoreScope {
        let stores: BTreeSet<StoreId> = stores.into_iter().collect();
        if stores.is_empty() {
            StoreScope::All
        } else {
            StoreScope::Only(Arc::new(stores))
        }
    }

    pub fn allows(&self, store: &StoreId) -> bool {
        match self {
            StoreScope::All => true,
            StoreScope::Only(stores) => stores.contains(store),
        }
    }

    /// The store a scope refuses, if any.
    pub fn check(&self, store: &StoreId) -> Result<(), AccessError> {
        if self.allows(store) {
            Ok(())
        } else {
            Err(AccessError::Store {
                store: store.clone(),
            })
        }
    }

    /// Narrows a subscription's filter to this scope: no stores named means all of the
    /// scope's; a store named outside it is refused.
    pub fn restrict(&self, filter: &mut EventFilter) -> Result<(), AccessError> {
        let StoreScope::Only(stores) = self else {
            return Ok(());
        };
        if filter.store_ids.is_empty() {
            filter.store_ids = stores.iter().cloned().collect();
            return Ok(());
        }
        // In a fixed order, so the store named in the error is always the same one.
        let mut named: Vec<&StoreId> = filter.store_ids.iter().collect();
        named.sort();
        named.into_iter().try_for_each(|store| self.check(store))
    }

    /// The first store `command` touches that this scope does not allow, judged against the
    /// state it is decided on (see [`Command::find_store`]).
    pub fn refused_store(&self, command: &Command, inventory: &Inventory) -> Option<StoreId> {
        let StoreScope::Only(_) = self else {
            return None;
        };
        command
            .find_store(inventory, &mut |store| !self.allows(store))
            .cloned()
    }

    /// Why this scope may not run `command` against `inventory`, if it may not: the store it
    /// may not touch; or, for a command on a reservation or transfer none of whose stores it
    /// may see, the answer an unknown id gets (see [`Command::unseen`]), so that a caller
    /// learns neither that the id exists nor which store holds it.
    pub fn refusal(&self, command: &Command, inventory: &Inventory) -> Option<CommandRefusal> {
        let store = self.refused_store(command, inventory)?;
        Some(
            match command.unseen(inventory, &mut |store| self.allows(store)) {
                Some(not_found) => CommandRefusal::Unseen(not_found),
                None => CommandRefusal::Store(AccessError::Store { store }),
            },
        )
    }
}

/// Why a scope may not run a command: see [`StoreScope::refusal`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum CommandRefusal {
    Store(AccessError),
    Unseen(DomainError),
}

/// Who sent a request: a credential's name, its role and its stores.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Principal {
    pub name: Arc<str>,
    pub role: Role,
    pub stores: StoreScope,
}

impl Principal {
    /// The name of [`Principal::anonymous`].
    pub const ANONYMOUS: &'static str = "anonymous";
    /// Names no credential may have: events record them for the server's own events and for
    /// a server without authentication, so a credential named so could pass as either.
    pub const RESERVED_NAMES: [&'static str; 2] = [Actor::SYSTEM, Principal::ANONYMOUS];

    /// Every request when no authentication is configured. Made once: every request of an
    /// unauthenticated server gets a clone (a reference count, no allocation).
    pub fn anonymous() -> Principal {
        static ANONYMOUS: std::sync::LazyLock<Principal> = std::sync::LazyLock::new(|| Principal {
            name: Principal::ANONYMOUS.into(),
            role: Role::Admin,
            stores: StoreScope::All,
        });
        ANONYMOUS.clone()
    }

    /// The prefix of a JWT principal's name: `jwt:` and the token's `sub`, so that no JWT
    /// subject passes as a configured credential (an API token or a certificate), in events'
    /// `actor` or in in-flight budgets.
    pub const JWT_PREFIX: &'static str = "jwt:";

    /// Why `name` may not name a credential configured here (an API token, a certificate), if
    /// it may not: see [`Principal::subject_problem`]; and it may not look like a JWT's.
    pub fn name_problem(name: &str) -> Option<String> {
        if let Some(problem) = Principal::subject_problem(name) {
            return Some(problem);
        }
        name.get(..Principal::JWT_PREFIX.len())
            .filter(|prefix| prefix.eq_ignore_ascii_case(Principal::JWT_PREFIX))
            .map(|_| {
                format!(
                    "starts with {:?}, which names JWT subjects",
                    Principal::JWT_PREFIX
                )
            })
    }

    /// Why `name` may not be recorded as who acted, if it may not: 1 to 128 characters, no
    /// control character (a newline or an escape would forge log lines and terminals), no
    /// space around it, and not a name events record for the server itself or for a server
    /// without authentication, in any case.
    pub fn subject_problem(name: &str) -> Option<String> {
        if name.is_empty() || name.len() > 128 {
            return Some("must be 1 to 128 characters".into());
        }
        if name.chars().any(char::is_control) {
            return Some("must not hold control characters".into());
        }
        if name.trim() != name {
            return Some("must not begin or end with white space".into());
        }
        Principal::RESERVED_NAMES
            .iter()
            .find(|reserved| reserved.eq_ignore_ascii_case(name))
            .map(|reserved| {
                format!(
                    "{name:?} is what events record for {}: give the credential another name",
                    if *reserved == Actor::SYSTEM {
                        "what the server does by itself"
                    } else {
                        "a server without authentication"
                    }
                )
            })
    }

    pub fn authorize(&self, action: Action) -> Result<(), AccessError> {
        if self.role.may(action) {
            Ok(())
        } else {
            Err(AccessError::Role {
                role: self.role,
                action,
            })
        }
    }
}

#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum AccessError {
    #[error("the role {role} does not allow {}", action.describe())]
    Role { role: Role, action: Action },
    #[error("this credential may not act on store {store}")]
    Store { store: StoreId },
}

/// Why a credential was not accepted. Nothing more specific is told to the client.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no credential: send `authorization: Bearer <token>`")]
    Missing,
    #[error("the credential is not valid")]
    Invalid,
    #[error("the credential has expired")]
    Expired,
}

/// The prefix of every API token `inventory token new` makes, so that secret scanners and
/// people recognise one.
pub const TOKEN_PREFIX: &str = "inv_";

/// One configured API token: the SHA-256 of its text and the principal it names.
#[derive(Clone, Debug)]
pub struct ApiToken {
    pub sha256: [u8; 32],
    pub principal: Principal,
    /// The most requests of this principal a server works on at once; `None`: only the
    /// server's own limit.
    pub max_in_flight: Option<usize>,
    /// Its own rates and subscriptions; what it leaves `None` is `[auth]`'s default.
    pub quota: Quota,
}

/// What one principal may use of each server over time and at once: requests and command
/// lines per second (token buckets holding one second's worth) and open subscriptions. `None`
/// takes the default: a token's own, else `[auth]`'s, else [`Quota::BUILT_IN`]; `Some(0)`
/// means no limit.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Quota {
    pub requests_per_second: Option<u32>,
    pub lines_per_second: Option<u32>,
    pub max_subscriptions: Option<u32>,
}

impl Quota {
    /// Every principal's, unless `[auth]` or its token says otherwise: room for a busy store
    /// system, not for one credential to fill the disk or every subscription slot.
    pub const BUILT_IN: Quota = Quota {
        requests_per_second: Some(2_000),
        lines_per_second: Some(20_000),
        max_subscriptions: Some(16),
    };

    /// A following query server (`replica`) and an `admin` may open this many subscriptions
    /// by default: several followers may share one replica token.
    pub const BUILT_IN_SUBSCRIPTIONS_OF_REPLICAS: u32 = 64;

    /// Each of `self`'s values, else `default`'s.
    pub fn or(self, default: Quota) -> Quota {
        Quota {
            requests_per_second: self.requests_per_second.or(default.requests_per_second),
            lines_per_second: self.lines_per_second.or(default.lines_per_second),
            max_subscriptions: self.max_subscriptions.or(default.max_subscriptions),
        }
    }

    /// The quota `role` gets from these settings, every value filled in.
    pub fn resolved(self, role: Role) -> Quota {
        let built_in = match role {
            Role::Admin | Role::Replica => Quota {
                max_subscriptions: Some(Quota::BUILT_IN_SUBSCRIPTIONS_OF_REPLICAS),
                ..Quota::BUILT_IN
            },
            Role::Operator | Role::Sales | Role::Reader => Quota::BUILT_IN,
        };
        self.or(built_in)
    }
}

/// A credential the server accepted: whose it is, its own limit of requests in flight, and
/// its quota (every value filled in).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Authenticated {
    pub principal: Principal,
    pub max_in_flight: Option<usize>,
    pub quota: Quota,
}

/// A client certificate's subject common name, taken as a credential under mutual TLS
/// (`[[auth.certificates]]`): the principal it names is called by that name.
#[derive(Clone, Debug)]
pub struct CertificateIdentity {
    pub principal: Principal,
    pub max_in_flight: Option<usize>,
}

/// Checks presented credentials: API tokens against the configured digests, JWTs through the
/// identity provider's keys, client certificates by their common name.
#[derive(Clone, Debug, Default)]
pub struct Authenticator {
    tokens: Vec<ApiToken>,
    jwt: Option<Arc<JwtVerifier>>,
    certificates: Vec<CertificateIdentity>,
    /// `[auth]`'s quota: every principal's, unless its token says otherwise.
    quota: Quota,
}

impl Authenticator {
    pub fn new(tokens: Vec<ApiToken>) -> Authenticator {
        Authenticator {
            tokens,
            jwt: None,
            certificates: Vec::new(),
            quota: Quota::default(),
        }
    }

    /// Every principal's quota where its token sets none (`[auth]`'s keys).
    pub fn with_quota(mut self, quota: Quota) -> Authenticator {
        self.quota = quota;
        self
    }

    /// Also takes a request without a token from a connection whose client certificate's
    /// common name is one of `certificates`' principals' names.
    pub fn with_certificates(mut self, certificates: Vec<CertificateIdentity>) -> Authenticator {
        self.certificates = certificates;
        self
    }

    /// Whether a JWT without a signature (`alg: none`) is taken: then anyone who reaches the
    /// server can claim any role.
    pub fn accepts_unsigned_jwts(&self) -> bool {
        self.jwt
            .as_ref()
            .is_some_and(|jwt| jwt.accepts(super::jwt::Algorithm::None))
    }

    /// Whether any client certificate is a credential (which needs mutual TLS).
    pub fn names_certificates(&self) -> bool {
        !self.certificates.is_empty()
    }

    /// The credential a client certificate with this common name is, if it is one. The name
    /// comes from a certificate the TLS handshake verified against the client CA.
    pub fn authenticate_certificate(&self, common_name: &str) -> Option<Authenticated> {
        self.certificates
            .iter()
            .find(|identity| identity.principal.name.as_ref() == common_name)
            .map(|identity| Authenticated {
                quota: self.quota.resolved(identity.principal.role),
                principal: identity.principal.clone(),
                max_in_flight: identity.max_in_flight,
            })
    }

    /// Also takes JWTs that `verifier` accepts.
    pub fn with_jwt(mut self, verifier: JwtVerifier) -> Authenticator {
        self.jwt = Some(Arc::new(verifier));
        self
    }

    /// The credential `token` is. A token of a JWT's form goes to the JWT verifier when one is
    /// configured; any other is an API token: every configured digest is compared, each in
    /// constant time, so the time taken says nothing of how close a guess was.
    pub fn authenticate(&self, token: &str) -> Result<Authenticated, AuthError> {
        if let Some(jwt) = &self.jwt
            && looks_like_jwt(token)
        {
            return jwt.verify(token).map(|principal| Authenticated {
                quota: self.quota.resolved(principal.role),
                principal,
                max_in_flight: jwt.max_in_flight(),
            });
        }
        let digest = sha256(token.as_bytes());
        let mut found = None;
        for candidate in &self.tokens {
            if constant_time_eq(&candidate.sha256, &digest) {
                found = Some(candidate);
            }
        }
        found
            .map(|token| Authenticated {
                quota: token.quota.or(self.quota).resolved(token.principal.role),
                principal: token.principal.clone(),
                max_in_flight: token.max_in_flight,
            })
            .ok_or(AuthError::Invalid)
    }
}

/// The SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest
        .as_ref()
        .try_into()
        .expect("a SHA-256 digest is 32 bytes")
}

fn constant_time_eq(left: &[u8; 32], right: &[u8; 32]) -> bool {
    let difference = left
        .iter()
        .zip(right)
        .fold(0u8, |difference, (l, r)| difference | (l ^ r));
    std::hint::black_box(difference) == 0
}

/// A new random token (256 bits from the system's generator) and the hex SHA-256 to
/// configure for it.
pub fn new_token() -> Result<(String, String), ring::error::Unspecified> {
    use ring::rand::SecureRandom;
    let mut secret = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut secret)?;
    let token = format!("{TOKEN_PREFIX}{}", hex(&secret));
    let digest = hex(&sha256(token.as_bytes()));
    Ok((token, digest))
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

/// The 32 bytes of a 64-digit hex SHA-256.
pub fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut digest = [0u8; 32];
    for (index, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * index..2 * index + 2], 16).ok()?;
    }
    Some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_may_do_what_its_name_says() {
        use Action::*;
        let allowed = |role: Role| -> Vec<Action> {
            [
                SalesCommand,
                StockCommand,
                Query,
                Subscribe,
                Describe,
                Administer,
            ]
            .into_iter()
            .filter(|action| role.may(*action))
            .collect()
        };
        assert_eq!(
            allowed(Role::Admin),
            [
                SalesCommand,
                StockCommand,
                Query,
                Subscribe,
                Describe,
                Administer
            ]
        );
        assert_eq!(
            allowed(Role::Operator),
            [SalesCommand, StockCommand, Query, Subscribe, Describe]
        );
        assert_eq!(
            allowed(Role::Sales),
            [SalesCommand, Query, Subscribe, Describe]
        );
        assert_eq!(allowed(Role::Reader), [Query, Subscribe, Describe]);
        assert_eq!(allowed(Role::Replica), [Subscribe, Describe]);
    }

    #[test]
    fn a_token_is_found_by_its_digest_and_nothing_else() {
        let (token, digest) = new_token().unwrap();
        assert!(token.starts_with(TOKEN_PREFIX));
        let principal = Principal {
            name: "pos-a".into(),
            role: Role::Sales,
            stores: StoreScope::of([StoreId::parse("store-a").unwrap()]),
        };
        let authenticator = Authenticator::new(vec![ApiToken {
            sha256: parse_sha256(&digest).unwrap(),
            principal: principal.clone(),
            max_in_flight: None,
            quota: Quota::default(),
        }]);
        assert_eq!(
            authenticator
                .authenticate(&token)
                .map(|found| found.principal),
            Ok(principal)
        );
        assert_eq!(
            authenticator.authenticate(&token[..token.len() - 1]),
            Err(AuthError::Invalid)
        );
        assert_eq!(authenticator.authenticate(&digest), Err(AuthError::Invalid));
        assert_eq!(parse_sha256("00"), None);
        assert_eq!(parse_sha256(&"g".repeat(64)), None);
    }
}
