//! Go `text/template` with the sprig functions, as far as StorageProvider templates need it.
//!
//! KubeBlocks renders a StorageProvider's templates (`datasafedConfigTemplate`,
//! `csiDriverSecretTemplate`, `storageClassTemplate`, `persistentVolumeClaimTemplate`) with Go's
//! `text/template` and sprig's `TxtFuncMap`. Users copy upstream providers verbatim, so the
//! syntax and the edge cases that show in output must match: trim markers, `.Parameters.absent`
//! printing `<no value>` while `index .Parameters "absent"` gives `""`, sprig's argument orders,
//! Go's `printf` notation for bad arguments.
//!
//! Supported: text, comments, `{{- -}}`, fields and chains, variables (`$x :=`, `$x =`, `$`),
//! pipelines, parentheses, `if`/`else if`/`else`, `with`/`else with`, `range` (lists, maps,
//! integers; `$i, $v :=`; `break`/`continue`), the builtins `and or not len index print printf
//! println eq ne lt le gt ge`, and sprig's `default empty coalesce ternary required fail quote
//! squote toString trim trimAll trimPrefix trimSuffix lower upper title replace hasPrefix
//! hasSuffix contains b64enc b64dec indent nindent trunc repeat cat join splitList split list dict
//! int int64 atoi toJson`. `define`/`template`/`block` are refused with a clear error.
//!
//! [`Template::parse`] reports syntax errors with the template's name, line and column, as Go
//! does; [`Template::render`] takes any [`Value`] (build one from JSON with `From`), and
//! [`render`] renders with a StorageProvider's [`RenderContext`]. No I/O happens here.

mod context;
mod exec;
mod format;
mod funcs;
mod lex;
mod parse;
mod value;

pub use context::{RenderContext, render};
pub use value::Value;

/// A parse or execution error, in Go's format: `template: NAME:LINE:COL: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template: {name}:{line}:{column}: {message}")]
pub struct TemplateError {
    /// The template's name (e.g. `s3/datasafedConfigTemplate`).
    pub name: String,
    /// 1-based line of the offending action.
    pub line: usize,
    /// 1-based column (in characters) of the offending token.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl TemplateError {
    fn at(name: &str, src: &str, pos: usize, message: String) -> Self {
        let before = &src[..pos.min(src.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Self { name: name.to_owned(), line, column, message }
    }

    pub(crate) fn parse(name: &str, src: &str, pos: usize, message: String) -> Self {
        Self::at(name, src, pos, message)
    }

    pub(crate) fn exec(name: &str, src: &str, pos: usize, message: String) -> Self {
        // Go names the failing command: `executing "NAME" at <.Parameters.x>: ...`.
        let rest = &src[pos.min(src.len())..];
        let end = rest.find("}}").unwrap_or(rest.len());
        let snippet = rest[..end].trim_end_matches([' ', '-', '\t', '\n', '\r']);
        let snippet = snippet.strip_prefix("{{").unwrap_or(snippet).trim();
        Self::at(name, src, pos, format!("executing \"{name}\" at <{snippet}>: {message}"))
    }
}

/// A parsed template, ready to render any number of times.
#[derive(Debug, Clone)]
pub struct Template {
    name: String,
    src: String,
    nodes: Vec<parse::Node>,
}

impl Template {
    /// Parses `src`; `name` appears in every error.
    pub fn parse(name: &str, src: &str) -> Result<Self, TemplateError> {
        let pieces = lex::lex(name, src)?;
        let nodes = parse::Parser::new(name, src, pieces).parse()?;
        Ok(Self { name: name.to_owned(), src: src.to_owned(), nodes })
    }

    /// The template's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Renders with `data` as dot (and `$`).
    pub fn render(&self, data: &Value) -> Result<String, TemplateError> {
        exec::Exec::new(&self.name, &self.src, data).run(&self.nodes, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> RenderContext {
        RenderContext::with_parameters(
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        )
    }

    fn r(src: &str, pairs: &[(&str, &str)]) -> String {
        render("t", src, &params(pairs)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn e(src: &str, pairs: &[(&str, &str)]) -> String {
        render("t", src, &params(pairs)).unwrap_err().to_string()
    }

    // Upstream `kubeblocks:deploy/helm/templates/storageprovider/s3.yaml`, as the Helm chart
    // emits it (the chart only unwraps the backquoted template text).
    const S3_DATASAFED: &str = "[storage]\ntype = s3\nprovider = AWS\nenv_auth = false\naccess_key_id = {{ index .Parameters \"accessKeyId\" }}\nsecret_access_key = {{ index .Parameters \"secretAccessKey\" }}\nregion = {{ index .Parameters \"region\" }}\nendpoint = {{ index .Parameters \"endpoint\" }}\nroot = {{ index .Parameters \"bucket\" }}\nno_check_certificate = {{ index .Parameters \"insecure\" }}\nno_check_bucket = {{ index .Parameters \"noCheckBucket\" }}\nchunk_size = 50Mi\n";

    const S3_CSI_SECRET: &str = "accessKeyID: {{ index .Parameters \"accessKeyId\" }}\nsecretAccessKey: {{ index .Parameters \"secretAccessKey\" }}\n{{- $region := index .Parameters \"region\" }}\n{{- $endpoint := index .Parameters \"endpoint\" }}\n{{- if not $endpoint }}\n  {{- if hasPrefix \"cn-\" $region }}\n    {{- $endpoint = (printf \"https://s3.%s.amazonaws.com.cn\" $region) }}\n  {{- else }}\n    {{- $endpoint = (printf \"https://s3.%s.amazonaws.com\" $region) }}\n  {{- end }}\n{{- end }}\nendpoint: {{ $endpoint }}\n";

    // Upstream minio.yaml storageClassTemplate (abridged to the templated lines).
    const MINIO_STORAGE_CLASS: &str = "provisioner: ru.yandex.s3.csi\nparameters:\n  mounter: geesefs\n  {{ $regionOption := \"\" }}\n  {{ if .Parameters.region }}\n    {{ $regionOption = (printf \"--region %s\" .Parameters.region) }}\n  {{ end }}\n  options: {{ printf \"--memory-limit %s --read-ahead-large %s --dir-mode 0777 --file-mode 0666 %s %s\" .Parameters.geesefsMemoryLimit .Parameters.geesefsReadAheadLarge .Parameters.mountOptions $regionOption }}\n  bucket: {{ index .Parameters \"bucket\" }}\n  csi.storage.k8s.io/provisioner-secret-name: {{ .CSIDriverSecretRef.Name }}\n  csi.storage.k8s.io/provisioner-secret-namespace: {{ .CSIDriverSecretRef.Namespace }}\n";

    #[test]
    fn renders_the_upstream_s3_datasafed_template() {
        let out = r(
            S3_DATASAFED,
            &[
                ("accessKeyId", "AKIA"),
                ("secretAccessKey", "s3cr3t"),
                ("region", "us-west-1"),
                ("bucket", "backups"),
                ("insecure", "false"),
                ("noCheckBucket", "false"),
            ],
        );
        assert_eq!(
            out,
            "[storage]\ntype = s3\nprovider = AWS\nenv_auth = false\naccess_key_id = AKIA\nsecret_access_key = s3cr3t\nregion = us-west-1\nendpoint = \nroot = backups\nno_check_certificate = false\nno_check_bucket = false\nchunk_size = 50Mi\n"
        );
    }

    #[test]
    fn renders_the_upstream_s3_csi_secret_with_derived_endpoints() {
        let base = [("accessKeyId", "A"), ("secretAccessKey", "S")];
        let with = |extra: &[(&str, &str)]| {
            let mut all = base.to_vec();
            all.extend_from_slice(extra);
            r(S3_CSI_SECRET, &all)
        };
        assert_eq!(
            with(&[("region", "us-east-2")]),
            "accessKeyID: A\nsecretAccessKey: S\nendpoint: https://s3.us-east-2.amazonaws.com\n"
        );
        assert!(
            with(&[("region", "cn-north-1")])
                .ends_with("endpoint: https://s3.cn-north-1.amazonaws.com.cn\n")
        );
        assert!(
            with(&[("region", "x"), ("endpoint", "http://minio:9000")])
                .ends_with("endpoint: http://minio:9000\n")
        );
    }

    #[test]
    fn renders_the_upstream_minio_storage_class_with_go_edge_cases() {
        let ctx = RenderContext {
            parameters: [
                ("bucket", "b"),
                ("geesefsMemoryLimit", "512"),
                ("geesefsReadAheadLarge", "20480"),
                ("region", "eu"),
            ]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
            csi_driver_secret_ref: Some(("csi-secret".into(), "kb-system".into())),
            generated_storage_class_name: None,
        };
        let out = render("minio/storageClassTemplate", MINIO_STORAGE_CLASS, &ctx).unwrap();
        // A missing map entry reached through a field is nil to printf, as in Go.
        assert!(out.contains("options: --memory-limit 512 --read-ahead-large 20480 --dir-mode 0777 --file-mode 0666 %!s(<nil>) --region eu\n"), "{out}");
        assert!(out.contains("provisioner-secret-name: csi-secret\n"));
        assert!(out.contains("provisioner-secret-namespace: kb-system\n"));
    }

    #[test]
    fn missing_parameters_print_like_go() {
        assert_eq!(
            r("[{{ .Parameters.nope }}][{{ index .Parameters \"nope\" }}]", &[]),
            "[<no value>][]"
        );
    }

    #[test]
    fn control_structures_and_variables() {
        let src = "{{ if eq .Parameters.kind \"a\" }}A{{ else if eq .Parameters.kind \"b\" }}B{{ else }}C{{ end }}";
        assert_eq!(r(src, &[("kind", "a")]), "A");
        assert_eq!(r(src, &[("kind", "b")]), "B");
        assert_eq!(r(src, &[("kind", "z")]), "C");
        assert_eq!(
            r("{{ with .Parameters.p }}<{{ . }}>{{ else }}none{{ end }}", &[("p", "x")]),
            "<x>"
        );
        assert_eq!(r("{{ with .Parameters.p }}<{{ . }}>{{ else }}none{{ end }}", &[]), "none");
        assert_eq!(
            r(
                "{{ range $k, $v := .Parameters }}{{ $k }}={{ $v }};{{ end }}",
                &[("b", "2"), ("a", "1")]
            ),
            "a=1;b=2;"
        );
        assert_eq!(
            r(
                "{{ range $i, $s := splitList \",\" .Parameters.l }}{{ if eq $i 3 }}{{ break }}{{ end }}{{ if eq $s \"y\" }}{{ continue }}{{ end }}{{ $s }}{{ end }}",
                &[("l", "x,y,z,w")]
            ),
            "xz"
        );
        assert_eq!(
            r("{{ range 3 }}{{ . }}{{ end }}{{ range list }}x{{ else }}empty{{ end }}", &[]),
            "012empty"
        );
        assert_eq!(r("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}", &[]), "2");
        assert_eq!(r("{{ $.Parameters.a }}{{ (dict \"k\" \"v\").k }}", &[("a", "A")]), "Av");
    }

    #[test]
    fn pipelines_and_sprig() {
        assert_eq!(r("{{ .Parameters.p | default \"d\" | upper | quote }}", &[]), "\"D\"");
        assert_eq!(
            r("{{ .Parameters.p | trimSuffix \"/\" | trimPrefix \"s3://\" }}", &[("p", "s3://b/")]),
            "b"
        );
        assert_eq!(
            r(
                "{{ and .Parameters.a .Parameters.b }}|{{ or .Parameters.a \"x\" }}",
                &[("a", "1"), ("b", "2")]
            ),
            "2|1"
        );
        assert_eq!(
            r("{{ not (empty .Parameters.a) }} {{ len .Parameters.a }}", &[("a", "abc")]),
            "true 3"
        );
        assert_eq!(
            r("{{ ternary \"yes\" \"no\" (eq .Parameters.a \"1\") }}", &[("a", "1")]),
            "yes"
        );
        assert_eq!(r("{{ \"x\" | b64enc | b64dec }}{{/* gone */}}", &[]), "x");
    }

    #[test]
    fn trim_markers() {
        assert_eq!(r("a\n  {{- \"b\" -}}  \n c", &[]), "abc");
    }

    #[test]
    fn errors_name_template_and_position() {
        assert_eq!(e("x\n{{ if .a }}", &[]), "template: t:2:1: unexpected EOF in {{if}}");
        assert_eq!(e("{{ nosuch 1 }}", &[]), "template: t:1:4: function \"nosuch\" not defined");
        assert_eq!(e("{{ $y }}", &[]), "template: t:1:4: undefined variable \"$y\"");
        assert_eq!(e("{{ end }}", &[]), "template: t:1:1: unexpected {{end}}");
        assert_eq!(
            e("root = {{ required \"path is required\" .Parameters.path }}", &[]),
            "template: t:1:11: executing \"t\" at <required \"path is required\" .Parameters.path>: error calling required: path is required"
        );
        assert_eq!(
            e("{{ .Parameters.a.b }}", &[("a", "x")]),
            "template: t:1:4: executing \"t\" at <.Parameters.a.b>: can't evaluate field b in type string"
        );
    }
}
