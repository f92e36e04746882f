//! Programming language of a file, from its name (as GitLab's code
//! suggestions do), for prompts and metrics.

/// (extensions, language name as prompts spell it).
const LANGUAGES: &[(&[&str], &str)] = &[
    (&["c", "h"], "c"),
    (
        &["cpp", "cc", "cxx", "c++", "hpp", "hh", "hxx", "h++"],
        "c++",
    ),
    (&["cs"], "c#"),
    (&["css", "scss", "sass", "less"], "css"),
    (&["clj", "cljs", "cljc", "edn"], "clojure"),
    (&["dart"], "dart"),
    (&["ex", "exs"], "elixir"),
    (&["erl", "hrl"], "erlang"),
    (&["fs", "fsi", "fsx"], "f#"),
    (&["go"], "go"),
    (&["groovy", "gradle"], "groovy"),
    (&["hs", "lhs"], "haskell"),
    (&["html", "htm", "xhtml"], "html"),
    (&["java"], "java"),
    (&["js", "jsx", "mjs", "cjs"], "javascript"),
    (&["json"], "json"),
    (&["kt", "kts"], "kotlin"),
    (&["lua"], "lua"),
    (&["md", "markdown"], "markdown"),
    (&["m", "mm"], "objective-c"),
    (&["ml", "mli"], "ocaml"),
    (&["php", "phtml"], "php"),
    (&["pl", "pm"], "perl"),
    (&["ps1", "psm1"], "powershell"),
    (&["py", "pyw", "pyi"], "python"),
    (&["r"], "r"),
    (&["rb", "rake", "gemspec"], "ruby"),
    (&["rs"], "rust"),
    (&["scala", "sc"], "scala"),
    (&["sh", "bash", "zsh"], "shell"),
    (&["sql"], "sql"),
    (&["swift"], "swift"),
    (&["tf", "tfvars", "hcl"], "terraform"),
    (&["ts", "tsx", "mts", "cts"], "typescript"),
    (&["vue"], "vue"),
    (&["svelte"], "svelte"),
    (&["xml", "xsd", "xsl"], "xml"),
    (&["yaml", "yml"], "yaml"),
    (&["zig"], "zig"),
    (&["jl"], "julia"),
    (&["nim"], "nim"),
    (&["v", "sv"], "verilog"),
    (&["vhd", "vhdl"], "vhdl"),
];

/// Well-known file names without a telling extension.
const FILE_NAMES: &[(&str, &str)] = &[
    ("Dockerfile", "dockerfile"),
    ("Makefile", "makefile"),
    ("Gemfile", "ruby"),
    ("Rakefile", "ruby"),
    ("Jenkinsfile", "groovy"),
];

/// The language of `file_name`, else the client's `language_identifier`, else
/// the bare extension; `None` when nothing is known.
pub fn detect(file_name: &str, language_identifier: Option<&str>) -> Option<String> {
    let base = file_name.rsplit(['/', '\\']).next().unwrap_or(file_name);
    if let Some((_, lang)) = FILE_NAMES.iter().find(|(n, _)| *n == base) {
        return Some((*lang).to_string());
    }
    let ext = base.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    if let Some(ext) = &ext
        && let Some((_, lang)) = LANGUAGES
            .iter()
            .find(|(exts, _)| exts.contains(&ext.as_str()))
    {
        return Some((*lang).to_string());
    }
    if let Some(id) = language_identifier.map(str::trim).filter(|s| !s.is_empty()) {
        return Some(id.to_ascii_lowercase());
    }
    ext.filter(|e| !e.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_order() {
        assert_eq!(detect("src/main.rs", None).as_deref(), Some("rust"));
        assert_eq!(detect("app/models/user.RB", None).as_deref(), Some("ruby"));
        assert_eq!(detect("Dockerfile", None).as_deref(), Some("dockerfile"));
        assert_eq!(detect("weird.xyz", Some("Zig")).as_deref(), Some("zig"));
        assert_eq!(detect("weird.xyz", None).as_deref(), Some("xyz"));
        assert_eq!(detect("README", None), None);
    }
}
