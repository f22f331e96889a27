//! Access tokens: cached until shortly before they expire, refreshed through
//! the `oauth2` crate with the user's stored refresh token, one refresh at a
//! time per user.

use crate::config::GoogleConfig;
use crate::errors;
use oauth2::basic::{BasicClient, BasicErrorResponse, BasicErrorResponseType};
use oauth2::{
    AsyncHttpClient, AuthType, ClientId, EndpointNotSet, EndpointSet, HttpRequest, HttpResponse,
    RequestTokenError, TokenResponse, TokenUrl,
};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use sync_domain::calendar::GoogleError;
use sync_domain::ids::UserId;
use sync_domain::ports::{
    CachedAccessToken, Clock, CredentialStore, CredentialsVersion, StoreError,
};
use sync_domain::secret::{AccessToken, RefreshToken};

/// A token is refreshed this long before Google says it expires, so a call
/// started with it does not reach Google with a dead token.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// Assumed lifetime when Google's answer has no `expires_in` (it always should).
const FALLBACK_LIFETIME: Duration = Duration::from_secs(300);

/// The `method` label of token refreshes in [`crate::CALLS_METRIC`].
const TOKEN_METHOD: &str = "oauth.token";

type OAuthClient =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// Why a client could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The HTTP client could not be built (TLS setup).
    #[error("cannot build the HTTP client")]
    Http(#[source] reqwest::Error),
    /// The token URL is not a valid URL.
    #[error("google_token_url is invalid")]
    TokenUrl(#[source] url::ParseError),
    /// The API base URL cannot take path segments (e.g. `mailto:`).
    #[error("google_api_base_url cannot be a base URL: {0}")]
    ApiBaseUrl(String),
}

/// The HTTP client every Google call goes through: redirects off (a redirect
/// would carry the bearer token or the client secret elsewhere), one timeout.
pub(crate) fn http_client(config: &GoogleConfig) -> Result<reqwest::Client, BuildError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(config.request_timeout)
        .user_agent(concat!("chronos-google-client/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(BuildError::Http)
}

/// Returns a valid access token for a user, refreshing it when needed.
pub struct TokenSource {
    store: Arc<dyn CredentialStore>,
    clock: Arc<dyn Clock>,
    oauth: OAuthClient,
    http: TokenHttp,
    /// Tokens known good, so most calls skip the store.
    memory: Mutex<HashMap<UserId, CachedAccessToken>>,
    /// One lock per user: concurrent callers wait for a single refresh.
    refreshes: Mutex<HashMap<UserId, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("token_url", &self.oauth.token_uri().as_str())
            .field("cached_users", &lock(&self.memory).len())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent even if a holder panicked (single inserts/removes).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl TokenSource {
    /// A token source with its own HTTP client.
    pub fn new(
        config: &GoogleConfig,
        store: Arc<dyn CredentialStore>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, BuildError> {
        Self::with_http(config, http_client(config)?, store, clock)
    }

    pub(crate) fn with_http(
        config: &GoogleConfig,
        http: reqwest::Client,
        store: Arc<dyn CredentialStore>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, BuildError> {
        let token_url =
            TokenUrl::new(config.token_url.to_string()).map_err(BuildError::TokenUrl)?;
        let oauth = BasicClient::new(ClientId::new(config.client_id.clone()))
            .set_client_secret(oauth2::ClientSecret::new(
                config.client_secret.expose().to_owned(),
            ))
            // Google documents the secret as a form field of the token request.
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(token_url);
        Ok(Self {
            store,
            oauth,
            http: TokenHttp {
                client: http,
                clock: Arc::clone(&clock),
            },
            clock,
            memory: Mutex::new(HashMap::new()),
            refreshes: Mutex::new(HashMap::new()),
        })
    }

    /// A valid access token for the user: cached if still fresh, else refreshed.
    pub async fn access_token(&self, user_id: &UserId) -> Result<AccessToken, GoogleError> {
        self.token(user_id, None).await
    }

    /// A token other than `rejected` (which Google just answered 401 to).
    /// Concurrent callers rejecting the same token share one refresh.
    pub async fn refreshed_access_token(
        &self,
        user_id: &UserId,
        rejected: &AccessToken,
    ) -> Result<AccessToken, GoogleError> {
        self.token(user_id, Some(rejected)).await
    }

    async fn token(
        &self,
        user_id: &UserId,
        rejected: Option<&AccessToken>,
    ) -> Result<AccessToken, GoogleError> {
        if let Some(token) = self.usable_in_memory(user_id, rejected) {
            return Ok(token);
        }
        let flight = Arc::clone(lock(&self.refreshes).entry(user_id.clone()).or_default());
        let _one_refresh_at_a_time = flight.lock().await;
        // Whoever held the lock before us may have refreshed already.
        if let Some(token) = self.usable_in_memory(user_id, rejected) {
            return Ok(token);
        }
        let credentials = self
            .store
            .credentials(user_id)
            .await
            .map_err(|e| store_error(&e))?
            .ok_or(GoogleError::NoCredentials)?;
        if credentials.needs_reauth {
            return Err(GoogleError::InvalidGrant);
        }
        if let Some(cached) = credentials
            .access_token
            .filter(|cached| self.usable(cached, rejected))
        {
            let token = cached.token.clone();
            lock(&self.memory).insert(user_id.clone(), cached);
            return Ok(token);
        }
        self.refresh(user_id, &credentials.refresh_token, &credentials.version)
            .await
    }

    fn usable_in_memory(
        &self,
        user_id: &UserId,
        rejected: Option<&AccessToken>,
    ) -> Option<AccessToken> {
        let memory = lock(&self.memory);
        memory
            .get(user_id)
            .filter(|cached| self.usable(cached, rejected))
            .map(|cached| cached.token.clone())
    }

    fn usable(&self, cached: &CachedAccessToken, rejected: Option<&AccessToken>) -> bool {
        cached.expires_at > sync_domain::retry::later(self.clock.now(), REFRESH_MARGIN)
            && rejected.is_none_or(|rejected| *rejected != cached.token)
    }

    /// Refreshes through the token endpoint; counted as `oauth.token` calls.
    async fn refresh(
        &self,
        user_id: &UserId,
        refresh_token: &RefreshToken,
        version: &CredentialsVersion,
    ) -> Result<AccessToken, GoogleError> {
        lock(&self.memory).remove(user_id);
        let grant = oauth2::RefreshToken::new(refresh_token.expose().to_owned());
        let answer = self
            .oauth
            .exchange_refresh_token(&grant)
            .request_async(&self.http)
            .await;
        let response = match answer {
            Ok(response) => {
                crate::client::count_call(TOKEN_METHOD, "200");
                response
            }
            Err(error) => {
                let error = token_error(error);
                let status = if error == GoogleError::InvalidGrant {
                    "invalid_grant"
                } else {
                    "error"
                };
                crate::client::count_call(TOKEN_METHOD, status);
                if error == GoogleError::InvalidGrant {
                    match self.store.mark_needs_reauth(user_id, version).await {
                        Ok(true) => {
                            tracing::warn!(user_id = %user_id, "Google refused the refresh token (invalid_grant); marked for re-authorisation")
                        }
                        Ok(false) => {
                            tracing::info!(user_id = %user_id, "Google refused a refresh token that new credentials have replaced; the new ones are used next");
                            return Err(GoogleError::Transient(
                                "credentials were replaced during the refresh".to_owned(),
                            ));
                        }
                        Err(store) => {
                            tracing::error!(user_id = %user_id, error = %store, "cannot mark credentials as needing re-authorisation")
                        }
                    }
                } else {
                    tracing::warn!(user_id = %user_id, error = %error, "access token refresh failed");
                }
                return Err(error);
            }
        };

        let token = AccessToken::new(response.access_token().secret().clone());
        let lifetime = response.expires_in().unwrap_or(FALLBACK_LIFETIME);
        let cached = CachedAccessToken {
            token: token.clone(),
            expires_at: sync_domain::retry::later(self.clock.now(), lifetime),
        };
        if let Some(rotated) = response
            .refresh_token()
            .filter(|new| new.secret() != refresh_token.expose())
        {
            // Stored before the access token: storing a refresh token clears the cached one.
            if let Err(store) = self
                .store
                .put_refresh_token(user_id, &RefreshToken::new(rotated.secret().clone()))
                .await
            {
                tracing::error!(user_id = %user_id, error = %store, "cannot store Google's rotated refresh token");
            } else {
                tracing::info!(user_id = %user_id, "stored Google's rotated refresh token");
            }
        }
        if let Err(store) = self.store.cache_access_token(user_id, &cached).await {
            tracing::warn!(user_id = %user_id, error = %store, "cannot cache the access token in the store");
        }
        tracing::debug!(user_id = %user_id, expires_in_secs = lifetime.as_secs(), "refreshed access token");
        lock(&self.memory).insert(user_id.clone(), cached);
        Ok(token)
    }
}

fn store_error(error: &StoreError) -> GoogleError {
    GoogleError::Transient(format!("credential store: {error}"))
}

/// Maps the token endpoint's failures; only `invalid_grant` means "sign in again".
fn token_error(error: RequestTokenError<TokenHttpError, BasicErrorResponse>) -> GoogleError {
    match error {
        RequestTokenError::ServerResponse(response) => match response.error() {
            BasicErrorResponseType::InvalidGrant => GoogleError::InvalidGrant,
            other => GoogleError::Other {
                status: 400,
                reason: other.to_string(),
                message: response
                    .error_description()
                    .cloned()
                    .unwrap_or_else(|| "token endpoint refused the request".to_owned()),
            },
        },
        RequestTokenError::Request(TokenHttpError::Transport(error)) => errors::transport(error),
        RequestTokenError::Request(TokenHttpError::RateLimited(retry_after)) => {
            GoogleError::RateLimited { retry_after }
        }
        RequestTokenError::Request(TokenHttpError::Unavailable(status)) => {
            GoogleError::Transient(format!("token endpoint answered {status}"))
        }
        RequestTokenError::Request(TokenHttpError::Response(error)) => {
            GoogleError::Transient(format!("token endpoint answer unreadable: {error}"))
        }
        // The body is not echoed: a half-parsed token answer may hold a secret.
        RequestTokenError::Parse(_, _) => GoogleError::Other {
            status: 200,
            reason: "invalidTokenResponse".to_owned(),
            message: "the token endpoint's answer could not be parsed".to_owned(),
        },
        RequestTokenError::Other(message) => GoogleError::Other {
            status: 400,
            reason: "tokenEndpointError".to_owned(),
            message,
        },
    }
}

/// Failures below the OAuth layer of a token request.
#[derive(Debug, thiserror::Error)]
enum TokenHttpError {
    #[error("token request failed")]
    Transport(#[source] reqwest::Error),
    #[error("token endpoint rate limited the request")]
    RateLimited(Option<Duration>),
    #[error("token endpoint unavailable ({0})")]
    Unavailable(u16),
    #[error("token endpoint response unreadable")]
    Response(#[source] oauth2::http::Error),
}

/// The `oauth2` HTTP client: our redirect-free reqwest client, with 5xx and
/// 429 turned into errors here, because `oauth2` would report them as a
/// server answer without the status that makes them transient.
struct TokenHttp {
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl<'c> AsyncHttpClient<'c> for TokenHttp {
    type Error = TokenHttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, TokenHttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let request = reqwest::Request::try_from(request)
                .map_err(|e| TokenHttpError::Transport(e.without_url()))?;
            let response = self
                .client
                .execute(request)
                .await
                .map_err(TokenHttpError::Transport)?;
            let status = response.status();
            if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                let retry_after = errors::retry_after(response.headers(), self.clock.now());
                return Err(TokenHttpError::RateLimited(retry_after));
            }
            if status.is_server_error() {
                return Err(TokenHttpError::Unavailable(status.as_u16()));
            }
            let mut builder = oauth2::http::Response::builder().status(status);
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            let body = response.bytes().await.map_err(TokenHttpError::Transport)?;
            builder
                .body(body.to_vec())
                .map_err(TokenHttpError::Response)
        })
    }
}
