//! The HTTP client the `oauth2` and `openidconnect` crates call: our reqwest client
//! behind their `AsyncHttpClient` trait, with a cap on response size. Errors carry no
//! URL (a URL could hold a code) and no body.

use std::future::Future;
use std::pin::Pin;

/// Responses from a provider larger than this are refused (discovery documents, key
/// sets and token responses are a few KiB).
const MAX_RESPONSE: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct HttpError(String);

#[derive(Clone)]
pub(super) struct OAuthHttp(reqwest::Client);

impl OAuthHttp {
    pub(super) fn new(client: reqwest::Client) -> Self {
        OAuthHttp(client)
    }

    pub(super) fn client(&self) -> &reqwest::Client {
        &self.0
    }
}

impl<'c> oauth2::AsyncHttpClient<'c> for OAuthHttp {
    type Error = HttpError;
    type Future =
        Pin<Box<dyn Future<Output = Result<oauth2::HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let response = self
                .0
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| HttpError(e.without_url().to_string()))?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = read_limited(response).await?;
            let mut out = http::Response::new(body);
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            Ok(out)
        })
    }
}

/// The body of `response`, or an error past [`MAX_RESPONSE`] bytes.
pub(super) async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| HttpError(e.without_url().to_string()))?
    {
        if body.len() + chunk.len() > MAX_RESPONSE {
            return Err(HttpError("the response is too large".into()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
