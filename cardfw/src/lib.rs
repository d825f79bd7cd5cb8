//! cardwall card firmware: the HTTP/HTTPS/DNS/TCP proxy firewall, rule store and card web page
//!
//! Nothing here yet: the proxy firewall is issue 3, the rule store and web page issue 5.
