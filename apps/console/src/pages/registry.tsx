import { useState } from "preact/hooks";
import { ApiError, rpc } from "../api";
import { enumName, lastPart, metricName, num, time } from "../format";
import { LineageGraph } from "../lineage";
import { href } from "../router";
import type { Adapter, AdapterVersion, Alias, LineageEdge, LineageNode } from "../types";
import { ErrorNote, Table, useLoad } from "../ui";

/** `id`: an adapter (`models/m/adapters/a`) or one of its versions (`…/versions/1`). */
export function RegistryPage({ id }: { id: string }) {
  const adapter = id.split("/").slice(0, 4).join("/");
  // The adapters of every model of the tenant.
  const { data, error } = useLoad(async () => {
    const { models = [] } = await rpc<{ models?: { name: string }[] }>("registry", "ListModels", { pageSize: 1000 });
    const lists = await Promise.all(models.map((m) => rpc<{ adapters?: Adapter[] }>("registry", "ListAdapters", { parent: m.name, pageSize: 1000 })));
    return { adapters: lists.flatMap((l) => l.adapters ?? []) };
  }, []);
  return (
    <section aria-labelledby="registry-title">
      <h1 id="registry-title">Registry</h1>
      <ErrorNote error={error} />
      <div class="split">
        <nav aria-label="Adapters">
          {data && (data.adapters ?? []).length === 0 ? <p class="muted">No adapters yet: a job registers one with `--register`.</p> : null}
          <ul class="list">
            {(data?.adapters ?? []).map((a) => (
              <li key={a.name}>
                <a href={href("registry", a.name)} aria-current={a.name === adapter ? "true" : undefined}>
                  {a.name.replace(/^models\//, "").replace("/adapters/", ":")} <span class="muted">({a.versionCount ?? 0} versions)</span>
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <div>{adapter.split("/").length === 4 ? <AdapterView name={adapter} version={id.includes("/versions/") ? id : ""} /> : <p class="muted">Choose an adapter.</p>}</div>
      </div>
    </section>
  );
}

function AdapterView({ name, version }: { name: string; version: string }) {
  const versions = useLoad(() => rpc<{ adapterVersions?: AdapterVersion[] }>("registry", "ListAdapterVersions", { parent: name, pageSize: 200 }).then((r) => r.adapterVersions ?? []), [name]);
  const aliases = useLoad(() => rpc<{ aliases?: Alias[] }>("registry", "ListAliases", { parent: name, pageSize: 200 }).then((r) => r.aliases ?? []), [name]);
  const chosen = version || versions.data?.[versions.data.length - 1]?.name || "";
  const reload = () => {
    versions.reload();
    aliases.reload();
  };
  return (
    <>
      <h2>{name}</h2>
      <ErrorNote error={versions.error} />
      <Table caption="Versions" head={["Version", "Aliases", "Headline metrics", "From job", "Created"]} id="versions">
        {(versions.data ?? []).map((v) => (
          <tr key={v.name} class={v.name === chosen ? "selected" : undefined}>
            <td>
              <a href={href("registry", v.name)} aria-current={v.name === chosen ? "true" : undefined}>
                {lastPart(v.name)}
              </a>
            </td>
            <td>{(v.aliases ?? []).map(lastPart).join(", ") || "—"}</td>
            <td>{(v.headlineMetrics ?? []).map((m) => `${metricName(m.metric)} ${num(m.value ?? 0)}`).join(", ") || "—"}</td>
            <td>{v.fineTuningJob ? <a href={href("jobs", v.fineTuningJob)}>{lastPart(v.fineTuningJob)}</a> : "—"}</td>
            <td>{time(v.createTime)}</td>
          </tr>
        ))}
      </Table>
      <ErrorNote error={aliases.error} />
      {(aliases.data ?? []).map((a) => (
        <AliasView key={a.name} alias={a} versions={versions.data ?? []} onMoved={reload} />
      ))}
      {versions.data && (aliases.data ?? []).length === 0 ? <p class="muted">No aliases: set one with `lathe adapters alias`.</p> : null}
      {chosen ? <VersionView name={chosen} /> : null}
    </>
  );
}

function AliasView({ alias, versions, onMoved }: { alias: Alias; versions: AdapterVersion[]; onMoved: () => void }) {
  const short = lastPart(alias.name);
  const [target, setTarget] = useState(versions.find((v) => v.name !== alias.adapterVersion)?.name ?? alias.adapterVersion ?? "");
  const [reason, setReason] = useState("");
  const [error, setError] = useState<string | undefined>(undefined);
  const [busy, setBusy] = useState(false);
  const move = async (e: Event) => {
    e.preventDefault();
    setError(undefined);
    if (reason.trim() === "") {
      setError("Say why the alias moves: the reason is kept in its history.");
      return;
    }
    setBusy(true);
    try {
      // The move applies only if the alias still points where this page saw it.
      await rpc("registry", "SetAlias", { name: alias.name, adapterVersion: target, reason: reason.trim(), expectedAdapterVersion: alias.adapterVersion ?? "" });
      setReason("");
      onMoved();
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };
  const id = `alias-${short}`;
  return (
    <section aria-labelledby={`${id}-title`} data-testid={id}>
      <h3 id={`${id}-title`}>
        Alias <code>{short}</code> → <span data-testid={`${id}-version`}>{lastPart(alias.adapterVersion)}</span>
      </h3>
      <form class="form-row" onSubmit={move}>
        <label>
          Move to version
          <select name="version" value={target} onChange={(e) => setTarget((e.target as HTMLSelectElement).value)}>
            {versions.map((v) => (
              <option key={v.name} value={v.name}>
                {lastPart(v.name)}
                {v.name === alias.adapterVersion ? " (current)" : ""}
              </option>
            ))}
          </select>
        </label>
        <label>
          Reason
          <input name="reason" value={reason} onInput={(e) => setReason((e.target as HTMLInputElement).value)} />
        </label>
        <button type="submit" disabled={busy}>
          Move {short}
        </button>
      </form>
      <ErrorNote error={error} />
      <Table caption={`History of ${short}`} head={["When", "From", "To", "Trigger", "Reason", "By", "Evaluation"]} id={`${id}-history`}>
        {[...(alias.history ?? [])].reverse().map((h, i) => (
          <tr key={i}>
            <td>{time(h.moveTime)}</td>
            <td>{h.fromVersion ? lastPart(h.fromVersion) : "—"}</td>
            <td>{lastPart(h.toVersion)}</td>
            <td>{enumName(h.trigger, "ALIAS_MOVE_TRIGGER_")}</td>
            <td>{h.reason || "—"}</td>
            <td>{h.actor || "—"}</td>
            <td>{h.evaluationRun ? <a href={href("evaluations", h.evaluationRun)}>{lastPart(h.evaluationRun)}</a> : "—"}</td>
          </tr>
        ))}
      </Table>
      {(alias.decisions ?? []).length > 0 ? (
        <Table caption={`Promotion decisions for ${short}`} head={["When", "Candidate", "Promoted", "Reason", "Conditions"]} id={`${id}-decisions`}>
          {[...(alias.decisions ?? [])].reverse().map((d, i) => (
            <tr key={i}>
              <td>{time(d.decideTime)}</td>
              <td>{lastPart(d.candidateVersion)}</td>
              <td class={d.promoted ? "ok" : "error"}>{d.promoted ? "yes" : "no"}</td>
              <td>{d.reason}</td>
              <td>
                {(d.outcomes ?? []).map((o, j) => (
                  <div key={j}>
                    {o.satisfied ? "✓" : "✗"} {metricName(o.condition?.metric)} Δ {num(o.difference?.meanDifference ?? 0)}
                    {o.condition?.minDelta !== undefined ? ` (needs ≥ ${num(o.condition.minDelta)})` : ""}
                  </div>
                ))}
              </td>
            </tr>
          ))}
        </Table>
      ) : (
        <p class="muted">No promotion decisions for {short}.</p>
      )}
    </section>
  );
}

function VersionView({ name }: { name: string }) {
  const lineage = useLoad(() => rpc<{ nodes?: LineageNode[]; edges?: LineageEdge[]; truncated?: boolean }>("registry", "GetLineage", { name, direction: "LINEAGE_DIRECTION_BOTH", depth: 4 }), [name]);
  const card = useLoad(() => rpc<{ modelCard?: { markdown?: string } }>("registry", "GetModelCard", { name }), [name]);
  return (
    <section aria-labelledby="version-title">
      <h2 id="version-title">Version {lastPart(name)}</h2>
      <h3>Lineage</h3>
      <ErrorNote error={lineage.error} />
      {lineage.data ? (
        <>
          <LineageGraph nodes={lineage.data.nodes ?? []} edges={lineage.data.edges ?? []} focus={name} />
          <details>
            <summary>Lineage as a list</summary>
            <ul>
              {(lineage.data.edges ?? []).map((e, i) => (
                <li key={i}>
                  {e.source} —{enumName(e.relation, "LINEAGE_RELATION_")}→ {e.target}
                </li>
              ))}
            </ul>
          </details>
          {lineage.data.truncated ? <p class="muted">The graph is cut at depth 4.</p> : null}
        </>
      ) : null}
      <h3>Model card</h3>
      <ErrorNote error={card.error} />
      {card.data?.modelCard?.markdown ? <pre class="card" data-testid="model-card">{card.data.modelCard.markdown}</pre> : null}
    </section>
  );
}
