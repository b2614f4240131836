//! scratch
#[cfg(test)]
mod scratch {
    use serde::Deserialize;
    use toml::Spanned;
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct F {
        #[serde(default)]
        routes: Vec<Spanned<R>>,
        #[serde(default)]
        webhooks: std::collections::BTreeMap<Spanned<String>, Spanned<W>>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct R {
        prefix: Spanned<String>,
        retries: Option<Spanned<u32>>,
        auth: Option<Spanned<Vec<Spanned<String>>>>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct W {
        profile: Spanned<String>,
    }
    fn line(t: &str, off: usize) -> usize {
        t[..off].matches('\n').count() + 1
    }
    fn show(t: &str) {
        match toml::from_str::<F>(t) {
            Ok(f) => {
                for r in &f.routes {
                    println!(
                        "route span {:?} line {} prefix line {}",
                        r.span(),
                        line(t, r.span().start),
                        line(t, r.get_ref().prefix.span().start)
                    );
                }
                for (k, w) in &f.webhooks {
                    println!(
                        "wh key {:?} line {} table line {}",
                        k.span(),
                        line(t, k.span().start),
                        line(t, w.span().start)
                    );
                }
            }
            Err(e) => println!(
                "ERR span {:?} line {:?} msg {:?}\nDISPLAY {}",
                e.span(),
                e.span().map(|s| line(t, s.start)),
                e.message(),
                e
            ),
        }
    }
    #[test]
    fn exp() {
        show(
            "# c\n\n[[routes]]\nprefix = \"/a\"\nretries = 1\n\n[[routes]]\nprefix = \"/b\"\n\n[webhooks.meta]\nprofile = \"x\"\n",
        );
        show("[[routes]]\nprefix = \"/a\"\nprefx = 1\n");
        show("[[routes]]\nretries = 1\n\n[[routes]]\nretries = 2\n");
        show("[[routes]]\nprefix = \"/a\"\nretries = -1\n");
        show("[[routes]]\nprefix = \"/a\"\nretries = \n");
        show("[webhooks.meta]\nprofile = \"a\"\n[webhooks.meta]\nprofile = \"b\"\n");
        show("[webhooks.meta]\nprofile = \"a\"\nprofile = \"b\"\n");
        show("[[routes]]\nprefix = \"/a\"\nauth = [\"a\", 3]\n");
        show("rutes = 1\n");
    }
}
