import { describe, expect, it } from "vitest";
import { TemplateError, TemplateFailure, TemplateSet } from "./go-template.js";
import { toYaml } from "./helm-chart.js";
import { jsYaml } from "./modules.js";

// The renderer follows Go's text/template where the chart depends on it; each case below is what
// `helm template` prints for the same input.

function render(src: string, values: Record<string, unknown> = {}, extra: Record<string, string> = {}): string {
  const set = new TemplateSet({ toYaml, fromYaml: (s) => jsYaml.load(s) });
  for (const [name, body] of Object.entries(extra)) set.add(name, body);
  set.add("t.yaml", src);
  return set.render("t.yaml", { Values: values, Release: { Name: "r" } });
}

describe("the Go template subset", () => {
  it("trims whitespace at {{- and -}}, across newlines", () => {
    expect(render("a  \n  {{- 1 -}}  \n  b")).toBe("a1b");
    expect(render("a {{ 1 }} b")).toBe("a 1 b");
  });

  it("ranges over a map in sorted key order, with key and value variables", () => {
    expect(render("{{ range $k, $v := .Values.m }}{{ $k }}={{ $v }};{{ end }}", { m: { b: 2, a: 1, c: 3 } })).toBe("a=1;b=2;c=3;");
    expect(render("{{ range .Values.l }}[{{ . }}]{{ else }}none{{ end }}", { l: [] })).toBe("none");
  });

  it("scopes variables to their block, and `=` assigns the outer one", () => {
    expect(render("{{ $x := 1 }}{{ if true }}{{ $x := 2 }}{{ $x }}{{ end }}{{ $x }}")).toBe("21");
    expect(render("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}")).toBe("2");
    expect(() => render("{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}")).toThrow(TemplateError);
  });

  it("prints a missing key as nothing, but fails on a field of a missing value", () => {
    expect(render("[{{ .Values.missing }}]")).toBe("[]");
    expect(() => render("{{ .Values.missing.deeper }}")).toThrow(/nil pointer evaluating interface \{\}\.deeper/);
  });

  it("stops and/or at the deciding argument", () => {
    expect(render("{{ if and .Values.a .Values.a.b }}yes{{ else }}no{{ end }}")).toBe("no");
    expect(render("{{ or .Values.none \"x\" }}")).toBe("x");
  });

  it("pipes into the last argument, includes defines, and indents as Helm's nindent", () => {
    const out = render('k:{{ include "obj" . | nindent 2 }}', { v: { b: [1, 2], a: "x" } }, { "_h.tpl": '{{- define "obj" -}}{{ toYaml .Values.v }}{{- end -}}' });
    expect(out).toBe("k:\n  a: x\n  b:\n  - 1\n  - 2");
    expect(render('{{ "a" | quote }} {{ printf "%s-%d" "x" 3 }} {{ default "d" .Values.none }} {{ 63 | trunc 2 | toString }}')).toBe('"a" x-3 d 63');
    expect(render("{{ dict \"b\" 1 \"a\" (list 1 \"x\") | toJson }}")).toBe('{"a":[1,"x"],"b":1}');
  });

  it("fails with the template's message on `required` and `fail`, and refuses functions it does not know", () => {
    expect(() => render('{{ required "x is required" .Values.x }}')).toThrow(TemplateFailure);
    expect(() => render('{{ fail "no" }}')).toThrow("no");
    expect(() => render("{{ randAlphaNum 8 }}")).toThrow(/not in the subset/);
  });
});
