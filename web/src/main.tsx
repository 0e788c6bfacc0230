/** The Switchyard web console: sign in with an API key, then one page per area of the platform. */
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { api, ApiError, session, whenUnauthorized, type Whoami } from './api';
import { Batches } from './pages/batches';
import { Features } from './pages/features';
import { Models } from './pages/models';
import { Monitoring } from './pages/monitoring';
import { Overview } from './pages/overview';
import { Tenants } from './pages/tenants';
import { Traffic } from './pages/traffic';
import { href, useRoute } from './router';
import { ErrorBox } from './ui';
import './style.css';

const PAGES: { id: string; title: string; key: string }[] = [
  { id: 'overview', title: 'Overview', key: '1' },
  { id: 'models', title: 'Models', key: '2' },
  { id: 'traffic', title: 'Traffic', key: '3' },
  { id: 'tenants', title: 'Tenants', key: '4' },
  { id: 'monitoring', title: 'Monitoring', key: '5' },
  { id: 'features', title: 'Features', key: '6' },
  { id: 'batches', title: 'Batch jobs', key: '7' },
];

type Theme = 'light' | 'dark';
function initialTheme(): Theme {
  const saved = localStorage.getItem('switchyard.theme');
  if (saved === 'light' || saved === 'dark') return saved;
  return matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light';
}

function SignIn({ onSignedIn }: { onSignedIn: (who: Whoami) => void }) {
  const [key, setKey] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event): Promise<void> => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const k = key.trim();
      const who = await api<Whoami>('GET', '/api/v1/whoami', undefined, k || null);
      session.set(k);
      onSignedIn(who);
    } catch (x) {
      setError(
        x instanceof ApiError && x.status === 401 ? 'This key is not valid (unknown, revoked or expired), or the server needs one.' : (x as Error).message,
      );
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="signin">
      <form onSubmit={(e) => void submit(e)} aria-label="Sign in">
        <h1>Switchyard</h1>
        <p>Sign in with an API key: a platform admin key sees everything, a tenant's key its own models, usage and keys.</p>
        <label for="key">API key</label>
        <input
          id="key"
          name="key"
          type="password"
          autocomplete="off"
          autofocus
          placeholder="sy_…"
          value={key}
          onInput={(e) => setKey((e.target as HTMLInputElement).value)}
        />
        <p class="muted small">Kept in this tab only (sessionStorage). A server started without --auth accepts an empty key.</p>
        {error ? <ErrorBox error={error} /> : null}
        <button class="primary" type="submit" disabled={busy}>
          Sign in
        </button>
      </form>
    </main>
  );
}

function App() {
  const [who, setWho] = useState<Whoami | null>(null);
  const [checking, setChecking] = useState(session.key() !== null);
  const [theme, setTheme] = useState<Theme>(initialTheme);
  const route = useRoute();

  useEffect(() => {
    document.documentElement.dataset['theme'] = theme;
    localStorage.setItem('switchyard.theme', theme);
  }, [theme]);
  useEffect(
    () =>
      whenUnauthorized(() => {
        session.clear();
        setWho(null);
      }),
    [],
  );
  useEffect(() => {
    if (session.key() === null) return;
    api<Whoami>('GET', '/api/v1/whoami')
      .then(setWho, () => session.clear())
      .finally(() => setChecking(false));
  }, []);
  useEffect(() => {
    // Alt+1…7 switch pages; the nav links are reachable with Tab as well.
    const on = (e: KeyboardEvent): void => {
      if (!e.altKey || e.ctrlKey || e.metaKey) return;
      const p = PAGES.find((x) => x.key === e.key);
      if (p) {
        e.preventDefault();
        location.hash = href(p.id);
      }
    };
    addEventListener('keydown', on);
    return () => removeEventListener('keydown', on);
  }, []);

  const page = PAGES.some((p) => p.id === route.page) ? route.page : 'overview';
  useEffect(() => {
    // The tab's title names the page (and its subject), so history and screen readers tell views apart.
    document.title = who
      ? `${PAGES.find((p) => p.id === page)!.title}${route.args[0] ? `: ${route.args[0]}` : ''} — Switchyard console`
      : 'Sign in — Switchyard console';
  }, [who, page, route.args[0]]);

  if (checking) return <p class="muted">Loading…</p>;
  if (!who) return <SignIn onSignedIn={setWho} />;
  const signOut = (): void => {
    session.clear();
    setWho(null);
  };
  return (
    <div class="shell">
      <a
        class="skip"
        href="#main"
        onClick={(e) => {
          e.preventDefault();
          document.getElementById('main')?.focus();
        }}
      >
        Skip to content
      </a>
      <nav aria-label="Pages">
        <div class="brand">Switchyard</div>
        <ul>
          {PAGES.map((p) => (
            <li key={p.id}>
              <a href={href(p.id)} aria-current={p.id === page ? 'page' : undefined} title={`Alt+${p.key}`}>
                {p.title}
              </a>
            </li>
          ))}
        </ul>
        <div class="who">
          <div title="Signed in as">{who.kind === 'platform' ? 'Platform' : `Tenant ${who.tenant?.name ?? ''}`}</div>
          <div class="muted small">{who.key ? who.key.id : who.actor}</div>
          <button type="button" onClick={() => setTheme(theme === 'dark' ? 'light' : 'dark')} aria-pressed={theme === 'dark'}>
            Dark theme
          </button>
          <button type="button" onClick={signOut}>
            Sign out
          </button>
        </div>
      </nav>
      <main id="main" tabIndex={-1}>
        {page === 'overview' ? <Overview who={who} /> : null}
        {page === 'models' ? <Models who={who} args={route.args} /> : null}
        {page === 'traffic' ? <Traffic who={who} args={route.args} /> : null}
        {page === 'tenants' ? <Tenants who={who} args={route.args} /> : null}
        {page === 'monitoring' ? <Monitoring who={who} args={route.args} /> : null}
        {page === 'features' ? <Features who={who} /> : null}
        {page === 'batches' ? <Batches who={who} /> : null}
      </main>
    </div>
  );
}

render(<App />, document.getElementById('app')!);
