import { useRef, useState } from "preact/hooks";
import { ApiError, chat, listModels, rpc, type ChatMessage } from "../api";
import { enumName, lastPart, time } from "../format";
import type { Deployment } from "../types";
import { ErrorNote, StateBadge, Table, useLoad } from "../ui";

export function DeploymentsPage() {
  const deployments = useLoad(() => rpc<{ deployments?: Deployment[] }>("gateway", "ListDeployments", { pageSize: 200 }).then((r) => r.deployments ?? []), []);
  const models = useLoad(() => listModels(), []);
  // What the chat can call: every served name first, then the other models of the tenant.
  const served = (deployments.data ?? []).flatMap((d) => [d.servedModelName, ...(d.adapters ?? []).map((a) => a.servedName)]).filter((n): n is string => !!n);
  const choices = [...new Set([...served, ...(models.data ?? []).map((m) => m.id)])];
  return (
    <section aria-labelledby="deployments-title">
      <h1 id="deployments-title">Deployments</h1>
      <ErrorNote error={deployments.error} />
      {deployments.data && deployments.data.length === 0 ? <p class="muted">Nothing deployed: `lathe deployments create` serves a model or an adapter under a name. Models can still be called on demand below.</p> : null}
      {(deployments.data ?? []).length > 0 ? (
        <Table caption="What is served" head={["Deployment", "State", "Backend", "Base model", "Served as", "Adapters (name → version)", "Updated"]} id="deployments-table">
          {(deployments.data ?? []).map((d) => (
            <tr key={d.name}>
              <td>{lastPart(d.name)}</td>
              <td>
                <StateBadge state={d.state} />
                {d.error?.message ? <div class="error">{d.error.message}</div> : null}
              </td>
              <td>{enumName(d.backend, "DEPLOYMENT_BACKEND_")}</td>
              <td>{lastPart(d.baseModel)}</td>
              <td>{d.servedModelName || "—"}</td>
              <td>
                {(d.adapters ?? []).map((a) => (
                  <div key={a.servedName}>
                    {a.servedName} → {a.adapterVersion ? a.adapterVersion.replace(/^models\//, "") : a.source}
                  </div>
                ))}
              </td>
              <td>{time(d.updateTime)}</td>
            </tr>
          ))}
        </Table>
      ) : null}
      <ChatBox choices={choices} />
    </section>
  );
}

function ChatBox({ choices }: { choices: string[] }) {
  const [model, setModel] = useState("");
  const [text, setText] = useState("");
  const [maxTokens, setMaxTokens] = useState(64);
  const [messages, setMessages] = useState<ChatMessage[]>([]);
  const [answer, setAnswer] = useState<string | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const abort = useRef<AbortController | null>(null);
  const chosen = model || choices[0] || "";

  const send = async (e: Event) => {
    e.preventDefault();
    setError(undefined);
    if (!chosen) {
      setError("There is no model to call yet.");
      return;
    }
    if (text.trim() === "") {
      setError("Write a message first.");
      return;
    }
    const history: ChatMessage[] = [...messages, { role: "user", content: text.trim() }];
    setMessages(history);
    setText("");
    setAnswer("");
    const ac = new AbortController();
    abort.current = ac;
    let got = "";
    try {
      await chat(chosen, history, maxTokens, (piece) => setAnswer((got += piece)), ac.signal);
      setMessages([...history, { role: "assistant", content: got }]);
    } catch (err) {
      if (!ac.signal.aborted) setError(err instanceof ApiError ? err.message : String(err));
      if (got) setMessages([...history, { role: "assistant", content: got }]);
    } finally {
      setAnswer(undefined);
      abort.current = null;
    }
  };
  return (
    <section aria-labelledby="chat-title" class="chat">
      <h2 id="chat-title">Chat</h2>
      <form class="chat" onSubmit={send}>
        <div class="form-row">
          <label>
            Model
            <select name="model" value={chosen} onChange={(e) => setModel((e.target as HTMLSelectElement).value)}>
              {choices.map((c) => (
                <option key={c} value={c}>
                  {c}
                </option>
              ))}
            </select>
          </label>
          <label>
            Max tokens
            <input name="max-tokens" type="number" min={1} max={4096} value={maxTokens} onInput={(e) => setMaxTokens(Math.max(1, Number((e.target as HTMLInputElement).value) || 1))} />
          </label>
          <button type="button" class="secondary" onClick={() => (abort.current?.abort(), setMessages([]))}>
            New chat
          </button>
        </div>
        <div class="transcript" aria-live="polite" aria-label="Conversation" data-testid="transcript">
          {messages.map((m, i) => (
            <div key={i} class={`msg msg-${m.role}`} data-role={m.role}>
              {m.content || "(empty answer)"}
            </div>
          ))}
          {answer !== undefined ? (
            <div class="msg msg-assistant" data-role="assistant" data-streaming="true">
              {answer || "…"}
            </div>
          ) : null}
        </div>
        <label>
          Message
          <textarea
            name="message"
            value={text}
            onInput={(e) => setText((e.target as HTMLTextAreaElement).value)}
            onKeyDown={(e) => {
              if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) (e.currentTarget.form as HTMLFormElement).requestSubmit();
            }}
          />
        </label>
        <ErrorNote error={error} />
        <div>
          <button type="submit" disabled={answer !== undefined}>
            Send
          </button>{" "}
          <span class="muted">Ctrl+Enter sends</span>
        </div>
      </form>
    </section>
  );
}
