import { useEffect, useState } from "preact/hooks";

// Hash routes (`#/jobs/fineTuningJobs%2Fabc`): the server serves one page, and nothing secret
// is ever in the address (the key stays in sessionStorage).

export interface Route {
  page: string;
  /** The resource the page shows, decoded (`fineTuningJobs/abc`), or "". */
  id: string;
}

export function parseRoute(hash: string): Route {
  const [page = "", id = ""] = hash.replace(/^#\/?/, "").split("/", 2);
  return { page: page || "jobs", id: id ? decodeURIComponent(id) : "" };
}

export function href(page: string, id = ""): string {
  return `#/${page}${id ? `/${encodeURIComponent(id)}` : ""}`;
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(location.hash));
  useEffect(() => {
    const on = () => setRoute(parseRoute(location.hash));
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return route;
}
