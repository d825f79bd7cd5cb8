//! cardwall web look: askama templates and CSS shared by the card and appliance web pages
//!
//! Nothing here yet: the first pages arrive with issues 4 and 5.
