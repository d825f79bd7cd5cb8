//! The card page as its owner uses it from the protected computer (of a [`SystemLab`], or
//! the image test's): curl with a cookie jar, over HTTPS to the card's inside address.

use std::path::Path;

use lab::SystemLab;
use lab::topology::Netns;

/// The PIN the tests set.
pub const PIN: &str = "25802580";

/// A logged-in owner's session on the card page.
#[derive(Debug)]
pub struct CardPage<'a> {
    pc: &'a Netns,
    jar: String,
}

/// The value of the first `name="csrf"` hidden field of a card page.
pub fn csrf_of(page: &str) -> String {
    let start = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    page[start..start + page[start..].find('"').expect("a closing quote")].to_owned()
}

impl<'a> CardPage<'a> {
    /// Sets the new card up with its setup code and [`PIN`], and logs in.
    pub fn set_up(lab: &'a SystemLab) -> CardPage<'a> {
        let setup_code = lab.card_setup_code().expect("a new card");
        CardPage::set_up_from(&lab.pc, &lab.dir, &setup_code)
    }

    /// Sets the new card up from the computer `pc` with `setup_code` and [`PIN`], and logs
    /// in; the cookie jar goes in `dir`.
    pub fn set_up_from(pc: &'a Netns, dir: &Path, setup_code: &str) -> CardPage<'a> {
        let jar = dir.join("card-cookies.txt");
        let card = CardPage {
            pc,
            jar: jar.to_str().expect("a UTF-8 path").to_owned(),
        };
        let login = card.get("/");
        let set_up = card.post(
            "/setup",
            &[
                &format!("csrf={}", csrf_of(&login)),
                &format!("setup_code={setup_code}"),
                &format!("new_pin={PIN}"),
                &format!("confirm_pin={PIN}"),
            ],
        );
        assert!(set_up.contains("The card is set up"), "{set_up}");
        let dashboard = card.post(
            "/login",
            &[&format!("csrf={}", csrf_of(&set_up)), &format!("pin={PIN}")],
        );
        assert!(dashboard.contains("Log out"), "{dashboard}");
        card
    }

    /// Logs in to a card set up already with [`PIN`] (after it restarted: sessions live in
    /// its memory), from `pc`; the cookie jar goes in `dir`.
    pub fn log_in(pc: &'a Netns, dir: &Path) -> CardPage<'a> {
        let jar = dir.join("card-cookies.txt");
        let card = CardPage {
            pc,
            jar: jar.to_str().expect("a UTF-8 path").to_owned(),
        };
        let login = card.get("/");
        let dashboard = card.post(
            "/login",
            &[&format!("csrf={}", csrf_of(&login)), &format!("pin={PIN}")],
        );
        assert!(dashboard.contains("Log out"), "{dashboard}");
        card
    }

    pub fn get(&self, path: &str) -> String {
        self.send(path, &[])
    }

    /// Posts a form of `name=value` fields (URL-encoded by curl).
    pub fn post(&self, path: &str, form: &[&str]) -> String {
        let fields: Vec<_> = form.iter().flat_map(|f| ["--data-urlencode", f]).collect();
        self.send(path, &fields)
    }

    /// Posts a multipart form (`name=value`, or `name=@file` for a file), as a file upload.
    pub fn upload(&self, path: &str, form: &[&str]) -> String {
        let fields: Vec<_> = form.iter().flat_map(|f| ["-F", f]).collect();
        self.send(path, &fields)
    }

    /// Posts `form` with the CSRF token of the page at `from`.
    pub fn post_from(&self, from: &str, path: &str, form: &[&str]) -> String {
        let csrf = format!("csrf={}", csrf_of(&self.get(from)));
        let mut all = vec![csrf.as_str()];
        all.extend_from_slice(form);
        self.post(path, &all)
    }

    fn send(&self, path: &str, fields: &[&str]) -> String {
        let url = format!("https://{}{path}", lab::CARD_INSIDE);
        let mut args = vec![
            "-sS",
            "--max-time",
            "10",
            "-k",
            "-L",
            "-b",
            &self.jar,
            "-c",
            &self.jar,
        ];
        args.extend_from_slice(fields);
        args.push(&url);
        let out = self.pc.run("curl", &args).expect("curl runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
