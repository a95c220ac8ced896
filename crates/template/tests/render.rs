//! The engine through its public API only, as the controllers use it: parse once, render with
//! a StorageProvider's context or with any JSON data, and read errors that say where.

use std::collections::BTreeMap;

use holdfast_template::{RenderContext, Template, TemplateError, Value, render};
use serde_json::json;

fn parameters(pairs: &[(&str, &str)]) -> RenderContext {
    RenderContext::with_parameters(
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
    )
}

/// The functions the shipped providers' `datasafedConfigTemplate`s call: `index`, `default`,
/// `with`, and `trimPrefix`/`trimSuffix` in a pipeline.
#[test]
fn the_functions_of_the_shipped_providers() {
    let src = "root = {{ index .Parameters \"bucket\" }}{{ with index .Parameters \"prefix\" | trimPrefix \"/\" | trimSuffix \"/\" }}/{{ . }}{{ end }}\nregion = {{ index .Parameters \"region\" | default \"us-east-1\" }}\n";
    let template = Template::parse("holdfast-s3/datasafedConfigTemplate", src).unwrap();
    let out = |pairs: &[(&str, &str)]| template.render(&parameters(pairs).to_value()).unwrap();
    assert_eq!(
        out(&[("bucket", "b"), ("prefix", "/team/pg/"), ("region", "eu-west-1")]),
        "root = b/team/pg\nregion = eu-west-1\n"
    );
    assert_eq!(out(&[("bucket", "b"), ("prefix", "/")]), "root = b\nregion = us-east-1\n");
    assert_eq!(out(&[]), "root = \nregion = us-east-1\n");
}

/// The functions upstream's S3 and MinIO providers call for their CSI Secret and StorageClass:
/// variables, `if not`, `hasPrefix`, `printf`, and the CSI Secret reference of the context.
#[test]
fn the_functions_of_the_upstream_providers() {
    let src = "{{- $endpoint := index .Parameters \"endpoint\" }}\n{{- if not $endpoint }}{{ $region := .Parameters.region }}\n  {{- if hasPrefix \"cn-\" $region }}{{ $endpoint = printf \"https://s3.%s.amazonaws.com.cn\" $region }}\n  {{- else }}{{ $endpoint = printf \"https://s3.%s.amazonaws.com\" $region }}{{ end }}\n{{- end }}\nendpoint: {{ $endpoint }}\nsecret: {{ .CSIDriverSecretRef.Namespace }}/{{ .CSIDriverSecretRef.Name }}\n";
    let mut ctx = parameters(&[("region", "cn-north-1")]);
    ctx.csi_driver_secret_ref = Some(("csi".into(), "kb-system".into()));
    assert_eq!(
        render("s3/csiDriverSecretTemplate", src, &ctx).unwrap(),
        "\nendpoint: https://s3.cn-north-1.amazonaws.com.cn\nsecret: kb-system/csi\n"
    );
    ctx.parameters.insert("endpoint".into(), "http://minio:9000".into());
    assert!(render("s", src, &ctx).unwrap().starts_with("\nendpoint: http://minio:9000\n"));
}

#[test]
fn the_context_carries_every_field_upstream_templates_name() {
    let ctx = RenderContext {
        parameters: [("a".to_owned(), "1".to_owned())].into(),
        csi_driver_secret_ref: None,
        generated_storage_class_name: Some("sc-1".into()),
    };
    let out = render(
        "pvc",
        "{{ .Parameters.a }}|{{ .GeneratedStorageClassName }}|{{ .CSIDriverSecretRef.Name }}|{{ .Parameters.none }}",
        &ctx,
    )
    .unwrap();
    assert_eq!(out, "1|sc-1||<no value>");
}

#[test]
fn any_json_data_renders() {
    let data = Value::from(json!({
        "name": "db", "replicas": 3, "ratio": 0.5, "tags": ["a", "b"], "labels": {"app": "pg"}, "none": null
    }));
    let src = "{{ .name }} x{{ .replicas }} {{ .ratio }} {{ join \",\" .tags }} {{ range $k, $v := .labels }}{{ $k }}={{ $v }}{{ end }} {{ printf \"%03d\" .replicas }} {{ .none }} {{ toJson .tags }}";
    assert_eq!(
        Template::parse("t", src).unwrap().render(&data).unwrap(),
        "db x3 0.5 a,b app=pg 003 <nil> [\"a\",\"b\"]"
    );
    let mut m = BTreeMap::new();
    m.insert("k".to_owned(), Value::from("v"));
    assert_eq!(Template::parse("t", "{{ .k }}").unwrap().render(&Value::Map(m)).unwrap(), "v");
}

#[test]
fn a_parsed_template_renders_many_times_and_keeps_its_name() {
    let template = Template::parse("p/datasafedConfigTemplate", "{{ .Parameters.x }}").unwrap();
    assert_eq!(template.name(), "p/datasafedConfigTemplate");
    for x in ["1", "2"] {
        assert_eq!(template.render(&parameters(&[("x", x)]).to_value()).unwrap(), x);
    }
}

#[test]
fn parse_errors_carry_name_line_and_column() {
    let err: TemplateError = Template::parse(
        "s3/datasafedConfigTemplate",
        "[storage]\nroot = {{ index .Parameters \"bucket\"\n",
    )
    .unwrap_err();
    assert_eq!((err.name.as_str(), err.line, err.column), ("s3/datasafedConfigTemplate", 2, 8));
    assert_eq!(err.message, "unclosed action");
    assert_eq!(err.to_string(), "template: s3/datasafedConfigTemplate:2:8: unclosed action");
    let err = Template::parse("t", "a\n\tb {{ nosuch }}").unwrap_err();
    assert_eq!((err.line, err.column), (2, 7));
    assert_eq!(err.message, "function \"nosuch\" not defined");
}

#[test]
fn execution_errors_name_the_failing_action_like_go() {
    let err = render(
        "local/datasafedConfigTemplate",
        "type = local\nroot = {{ required \"path is required\" .Parameters.path -}}\n",
        &parameters(&[]),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "template: local/datasafedConfigTemplate:2:11: executing \"local/datasafedConfigTemplate\" at <required \"path is required\" .Parameters.path>: error calling required: path is required"
    );
    let err = render("t", "{{ fail \"no\" }}", &parameters(&[])).unwrap_err();
    assert_eq!(err.message, "executing \"t\" at <fail \"no\">: error calling fail: no");
    let err = render("t", "{{ upper 1 }}", &parameters(&[])).unwrap_err();
    assert!(
        err.message
            .ends_with("error calling upper: wrong type for value; expected string; got int"),
        "{err}"
    );
}

#[test]
fn a_runaway_template_stops() {
    let err = render("t", "{{ range 3000 }}{{ range 3000 }}{{ end }}{{ end }}", &parameters(&[]))
        .unwrap_err();
    assert!(err.message.ends_with("template runs too long"), "{err}");
}
