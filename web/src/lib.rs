//! cardwall web look: askama templates and CSS shared by the card and appliance web pages.
//!
//! Server-rendered HTML, one stylesheet, no JavaScript framework: a page works with scripting
//! off, reads on a 360 px phone, and every status is said in words, not only in colour.
//!
//! - [`STYLE_CSS`] (served at `/static/style.css`) and `templates/base.html`, the layout every
//!   page extends.
//! - [`LIVE_JS`] (served at `/static/live.js`): the few lines that refresh a page's live parts
//!   in place; [`CONTENT_SECURITY_POLICY`] is the header a page is served with.
//! - [`graph`]: traffic graphs as inline SVG, laid out here, on the server.
//! - [`appliance`]: the appliance's status page.
//! - [`proxy`]: the pages the card's proxy answers with (blocked, unreachable, refused),
//!   self-contained because they are served in the name of any site.
//! - [`format`]: bytes, rates, durations and times in human units.
//!
//! Page structs are plain data: the crates that serve them (the appliance, later the card) map
//! their own state into these. With the `axum` feature a page struct is an axum response.

pub mod appliance;
pub mod card;
pub mod format;
pub mod graph;
pub mod policy;
pub mod proxy;

/// For `render()` on the page structs without depending on askama directly.
pub use askama;
use askama::Template;
#[cfg(feature = "axum")]
use askama_web::WebTemplate;

/// The one stylesheet, for `/static/style.css`.
pub const STYLE_CSS: &str = include_str!("../static/style.css");

/// The live-update script, for `/static/live.js`: every few seconds it fetches the page again
/// and swaps in the elements marked `data-live` whose content changed.
pub const LIVE_JS: &str = include_str!("../static/live.js");

/// The `Content-Security-Policy` for pages built from these templates: stylesheet and script
/// from the same origin only, no inline script, no frames. Defence in depth beside escaping:
/// card-reported host names end up in the page.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; \
    script-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// The page for an unknown address.
#[derive(Debug, Clone, Template)]
#[cfg_attr(feature = "axum", derive(WebTemplate))]
#[template(path = "not_found.html")]
pub struct NotFoundPage {
    /// The path that was asked for (shown escaped).
    pub path: String,
}
