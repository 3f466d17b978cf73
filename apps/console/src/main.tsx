import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { ApiError, checkKey, forgetKey, setUnauthenticatedHandler, storedKey, storeKey } from "./api";
import { href, useRoute } from "./router";
import { JobsPage } from "./pages/jobs";
import { DatasetsPage } from "./pages/datasets";
import { EvaluationsPage } from "./pages/evaluations";
import { RegistryPage } from "./pages/registry";
import { DeploymentsPage } from "./pages/deployments";
import "./style.css";

const pages = [
  { id: "jobs", title: "Jobs" },
  { id: "datasets", title: "Datasets" },
  { id: "evaluations", title: "Evaluations" },
  { id: "registry", title: "Registry" },
  { id: "deployments", title: "Deployments" },
] as const;

function Login({ onLogin, notice }: { onLogin: (tenant: string) => void; notice: string | undefined }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState<string | undefined>(notice);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    const k = key.trim();
    if (k === "") {
      setError("Enter an API key: the one `lathe up` printed, or one of LATHE_API_KEYS.");
      return;
    }
    setBusy(true);
    try {
      const tenant = await checkKey(k);
      storeKey(k);
      onLogin(tenant);
    } catch (err) {
      setError(err instanceof ApiError && err.status === 401 ? `The key was refused: ${err.message}` : `Could not check the key: ${(err as Error).message}`);
    } finally {
      setBusy(false);
    }
  };
  return (
    <main id="main" class="login">
      <h1>Lathe console</h1>
      <form onSubmit={submit} aria-describedby="login-help">
        <label for="api-key">API key</label>
        <input id="api-key" name="api-key" type="password" autoComplete="off" value={key} onInput={(e) => setKey((e.target as HTMLInputElement).value)} aria-invalid={error ? "true" : "false"} aria-describedby={error ? "login-error" : undefined} required />
        <p id="login-help" class="muted">
          The key is kept in this tab only (session storage) and sent as an Authorization header.
        </p>
        {error ? (
          <p id="login-error" class="error" role="alert">
            {error}
          </p>
        ) : null}
        <button type="submit" disabled={busy}>
          {busy ? "Checking…" : "Sign in"}
        </button>
      </form>
    </main>
  );
}

function App() {
  const [tenant, setTenant] = useState<string | undefined>(undefined);
  const [checking, setChecking] = useState(storedKey() !== null);
  const [notice, setNotice] = useState<string | undefined>(undefined);
  const route = useRoute();

  useEffect(() => {
    setUnauthenticatedHandler(() => {
      forgetKey();
      setTenant(undefined);
      setNotice("The key is no longer accepted; sign in again.");
    });
    const key = storedKey();
    if (key === null) return;
    checkKey(key).then(
      (t) => {
        setTenant(t);
        setChecking(false);
      },
      () => {
        forgetKey();
        setChecking(false);
      },
    );
  }, []);

  useEffect(() => {
    const page = pages.find((p) => p.id === route.page);
    document.title = `${page?.title ?? "Lathe"} · Lathe console`;
  }, [route.page]);

  if (checking) return <p class="muted">Checking the key…</p>;
  if (tenant === undefined) return <Login onLogin={(t) => (setNotice(undefined), setTenant(t))} notice={notice} />;

  const signOut = () => {
    forgetKey();
    setTenant(undefined);
  };
  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <span class="brand">Lathe</span>
        <nav aria-label="Pages">
          <ul>
            {pages.map((p) => (
              <li key={p.id}>
                <a href={href(p.id)} aria-current={route.page === p.id ? "page" : undefined}>
                  {p.title}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <span class="who">
          tenant <strong data-testid="tenant">{tenant}</strong>
          <button type="button" class="link" onClick={signOut}>
            Sign out
          </button>
        </span>
      </header>
      <main id="main" tabIndex={-1}>
        {route.page === "jobs" ? <JobsPage id={route.id} /> : null}
        {route.page === "datasets" ? <DatasetsPage id={route.id} /> : null}
        {route.page === "evaluations" ? <EvaluationsPage id={route.id} /> : null}
        {route.page === "registry" ? <RegistryPage id={route.id} /> : null}
        {route.page === "deployments" ? <DeploymentsPage /> : null}
        {pages.some((p) => p.id === route.page) ? null : <p class="error">There is no page “{route.page}”.</p>}
      </main>
    </>
  );
}

render(<App />, document.getElementById("app")!);
