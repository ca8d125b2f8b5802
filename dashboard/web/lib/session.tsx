"use client";

import { createContext, useCallback, useContext, useEffect, useState, type FormEvent, type ReactNode } from "react";
import { api, ApiError, setCsrf, type SessionInfo } from "./api";

type SessionState = {
  session: SessionInfo | null;
  can: (permission: string) => boolean;
  signOut: () => Promise<void>;
  switchTenant: (tenant: string) => Promise<void>;
};

const SessionContext = createContext<SessionState>({
  session: null,
  can: () => false,
  signOut: async () => {},
  switchTenant: async () => {},
});

export function useSession() {
  return useContext(SessionContext);
}

function SignIn({ onSignedIn }: { onSignedIn: (s: SessionInfo) => void }) {
  const [key, setKey] = useState("");
  const [tenant, setTenant] = useState("");
  const [error, setError] = useState("");
  async function submit(event: FormEvent) {
    event.preventDefault();
    setError("");
    try {
      const session = await api<SessionInfo>("/api/session", {
        method: "POST",
        body: { api_key: key, tenant: tenant || null },
      });
      setCsrf(session.csrf_token);
      onSignedIn(session);
    } catch (err) {
      if (err instanceof ApiError) {
        setError(err.problem.message);
        // A failed sign-in gets a fresh anonymous session: read its CSRF token.
        const fresh = await api<SessionInfo>("/api/session").catch(() => null);
        if (fresh) setCsrf(fresh.csrf_token);
      } else setError(String(err));
    }
  }
  return (
    <section className="card narrow">
      <h1>Sign in</h1>
      <p>This scheduler requires an API key. It stays on the dashboard server, never in the page.</p>
      <form onSubmit={submit}>
        <label htmlFor="api-key">API key</label>
        <input id="api-key" type="password" autoComplete="off" value={key} onChange={(e) => setKey(e.target.value)} required />
        <label htmlFor="tenant">Tenant (for keys of several tenants)</label>
        <input id="tenant" value={tenant} onChange={(e) => setTenant(e.target.value)} />
        {error && (
          <p role="alert" className="error">
            {error}
          </p>
        )}
        <button type="submit">Sign in</button>
      </form>
    </section>
  );
}

export function SessionGate({ children }: { children: ReactNode }) {
  const [session, setSession] = useState<SessionInfo | null>(null);
  const [error, setError] = useState("");
  const load = useCallback(async () => {
    try {
      const s = await api<SessionInfo>("/api/session");
      setCsrf(s.csrf_token);
      setSession(s);
    } catch (err) {
      setError(err instanceof ApiError ? err.problem.message : String(err));
    }
  }, []);
  useEffect(() => {
    void load();
  }, [load]);
  const signOut = useCallback(async () => {
    await api("/api/session", { method: "DELETE" });
    setSession(null);
    await load();
  }, [load]);
  const switchTenant = useCallback(async (tenant: string) => {
    const s = await api<SessionInfo>("/api/session/tenant", { method: "POST", body: { tenant } });
    setSession(s);
  }, []);
  const can = useCallback((p: string) => !!session && session.permissions.includes(p), [session]);
  if (error) {
    return (
      <p role="alert" className="error">
        The scheduler cannot be reached: {error}
      </p>
    );
  }
  if (!session) return <p aria-busy="true">Loading…</p>;
  if (session.auth_required && !session.signed_in) return <SignIn onSignedIn={setSession} />;
  return <SessionContext.Provider value={{ session, can, signOut, switchTenant }}>{children}</SessionContext.Provider>;
}

export function SignOutButton() {
  const { session, signOut } = useSession();
  if (!session?.signed_in) return null;
  return (
    <button type="button" className="link" onClick={() => void signOut()}>
      Sign out
    </button>
  );
}

export function TenantSwitcher() {
  const { session, switchTenant } = useSession();
  const [error, setError] = useState("");
  if (!session?.signed_in) return null;
  async function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    setError("");
    try {
      await switchTenant(String(new FormData(event.currentTarget).get("tenant") ?? ""));
    } catch (err) {
      setError(err instanceof ApiError ? err.problem.message : String(err));
    }
  }
  return (
    <form className="filters" onSubmit={submit} aria-label="Tenant">
      <div>
        <label htmlFor="switch-tenant">Tenant</label>
        <input id="switch-tenant" name="tenant" defaultValue={session.tenant ?? ""} key={session.tenant ?? ""} />
      </div>
      <div>
        <button type="submit" className="secondary">
          Switch tenant
        </button>
      </div>
      {error && (
        <p role="alert" className="error">
          {error}
        </p>
      )}
    </form>
  );
}
