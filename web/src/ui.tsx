/** Shared pieces of the console: data loading, tables, empty states, confirmations, charts. */
import type { ComponentChildren } from 'preact';
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { api, ApiError } from './api';

export interface Loaded<T> {
  data: T | null;
  error: ApiError | null;
  loading: boolean;
  reload: () => void;
}

/** GET `path` (null: nothing to load) and reload every `refreshMs` when given. */
export function useApi<T>(path: string | null, refreshMs = 0): Loaded<T> {
  const [state, setState] = useState<{ data: T | null; error: ApiError | null; loading: boolean }>({ data: null, error: null, loading: path !== null });
  const [tick, setTick] = useState(0);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  useEffect(() => {
    if (path === null) {
      setState({ data: null, error: null, loading: false });
      return;
    }
    let live = true;
    setState((s) => ({ ...s, loading: true }));
    api<T>('GET', path).then(
      (data) => live && setState({ data, error: null, loading: false }),
      (e: unknown) => live && setState({ data: null, error: e instanceof ApiError ? e : new ApiError(0, String(e), null), loading: false }),
    );
    const timer = refreshMs > 0 ? setTimeout(reload, refreshMs) : null;
    return () => {
      live = false;
      if (timer) clearTimeout(timer);
    };
  }, [path, tick, refreshMs]);
  return { ...state, reload };
}

/** Renders the loading / error state of `l`, else its data through `children`. */
export function Show<T>({ l, children }: { l: Loaded<T>; children: (data: T) => ComponentChildren }) {
  if (l.error) return <ErrorBox error={l.error} />;
  if (l.data === null)
    return (
      <p class="muted" aria-busy="true">
        Loading…
      </p>
    );
  return <div class="loaded">{children(l.data)}</div>;
}

export function ErrorBox({ error }: { error: Error | string }) {
  return (
    <div class="error" role="alert">
      {typeof error === 'string' ? error : error.message}
    </div>
  );
}

/** An empty state: what is missing and what to do about it. */
export function Empty({ title, children }: { title: string; children?: ComponentChildren }) {
  return (
    <div class="empty">
      <strong>{title}</strong>
      {children ? <div>{children}</div> : null}
    </div>
  );
}

export function Card({ title, children, actions }: { title: string; children: ComponentChildren; actions?: ComponentChildren }) {
  return (
    <section class="card" aria-label={title}>
      <header>
        <h2>{title}</h2>
        {actions}
      </header>
      {children}
    </section>
  );
}

/**
 * A table in a scroll box. When the box overflows it becomes a tab stop (a named group), so a keyboard user can
 * scroll it with the arrow keys (WCAG 2.1.1; axe-core's scrollable-region-focusable); otherwise it adds none.
 */
export function Table({ head, rows, label }: { head: ComponentChildren[]; rows: ComponentChildren[][]; label: string }) {
  const ref = useRef<HTMLDivElement>(null);
  const [scrolls, setScrolls] = useState(false);
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    const check = (): void => setScrolls(el.scrollHeight > el.clientHeight + 1 || el.scrollWidth > el.clientWidth + 1);
    check();
    const ro = new ResizeObserver(check);
    ro.observe(el);
    return () => ro.disconnect();
  }, [rows.length, head.length]);
  return (
    <div class="table-wrap" ref={ref} {...(scrolls ? { tabIndex: 0, role: 'group', 'aria-label': `${label} (scrollable)` } : {})}>
      <table aria-label={label}>
        <thead>
          <tr>
            {head.map((h, i) => (
              <th key={i} scope="col">
                {h}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.map((r, i) => (
            <tr key={i}>
              {r.map((c, j) => (
                <td key={j}>{c}</td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

export function Code({ children }: { children: ComponentChildren }) {
  return <code class="code">{children}</code>;
}

/**
 * A button that asks first (a modal <dialog>: Escape cancels, focus starts on Cancel), then runs `action`;
 * its error is shown in the dialog, success closes it and calls `done`.
 */
export function ConfirmButton({
  label,
  title,
  message,
  action,
  done,
  danger,
  confirmLabel,
}: {
  label: string;
  title: string;
  message: ComponentChildren;
  action: () => Promise<unknown>;
  done?: () => void;
  danger?: boolean;
  confirmLabel?: string;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const open = (): void => {
    setError(null);
    ref.current?.showModal();
  };
  const confirm = async (): Promise<void> => {
    setBusy(true);
    setError(null);
    try {
      await action();
      ref.current?.close();
      done?.();
    } catch (e) {
      setError((e as Error).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      <button type="button" class={danger ? 'danger' : ''} onClick={open}>
        {label}
      </button>
      <dialog ref={ref} aria-label={title}>
        <h3>{title}</h3>
        <div>{message}</div>
        {error ? <ErrorBox error={error} /> : null}
        <div class="actions">
          <button type="button" autofocus onClick={() => ref.current?.close()}>
            Cancel
          </button>
          <button type="button" class={danger ? 'danger' : 'primary'} disabled={busy} onClick={() => void confirm()}>
            {confirmLabel ?? 'Confirm'}
          </button>
        </div>
      </dialog>
    </>
  );
}

function cssVar(name: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || '#888';
}

const PALETTE = ['--c1', '--c2', '--c3', '--c4', '--c5', '--c6'];

/** A line chart (uPlot) of series over time (x in ms since the epoch); null values are gaps. */
export function LineChart({
  x,
  series,
  height = 180,
  label,
  unit,
}: {
  x: number[];
  series: { label: string; values: (number | null)[] }[];
  height?: number;
  label: string;
  unit?: string;
}) {
  const ref = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    const text = cssVar('--muted');
    const grid = cssVar('--grid');
    const axis = { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
    const opts: uPlot.Options = {
      width: Math.max(240, el.clientWidth),
      height,
      // Sparse series (a few steps with data among empty ones) are drawn as points too: a lone step has no line.
      series: [
        {},
        ...series.map((s, i) => ({
          label: s.label,
          stroke: cssVar(PALETTE[i % PALETTE.length]!),
          width: 1.5,
          spanGaps: false,
          points: {
            show: s.values.filter((v) => v !== null).length < 60 || s.values.some((v, j) => v !== null && s.values[j - 1] == null && s.values[j + 1] == null),
            size: 5,
          },
        })),
      ],
      axes: [axis, { ...axis, size: 56, values: (_u: uPlot, v: number[]) => v.map((n) => `${n}${unit ?? ''}`) }],
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
    };
    const data = [x.map((t) => t / 1000), ...series.map((s) => s.values)] as uPlot.AlignedData;
    const chart = new uPlot(opts, data, el);
    const ro = new ResizeObserver(() => chart.setSize({ width: Math.max(240, el.clientWidth), height }));
    ro.observe(el);
    return () => {
      ro.disconnect();
      chart.destroy();
    };
  }, [x, series, height, document.documentElement.dataset['theme']]);
  return <figure class="chart" role="img" aria-label={label} ref={ref} />;
}

/** A bar histogram (plain HTML): one bar per bin, optional second series drawn beside it. */
export function Bars({
  labels,
  values,
  compare,
  label,
  names,
}: {
  labels: string[];
  values: number[];
  compare?: number[];
  label: string;
  names?: [string, string];
}) {
  const max = Math.max(1e-12, ...values, ...(compare ?? []));
  return (
    <figure class="bars" aria-label={label}>
      {names && compare ? (
        <figcaption>
          <span class="sw c1" /> {names[0]} <span class="sw c2" /> {names[1]}
        </figcaption>
      ) : null}
      <div class="bars-row">
        {labels.map((l, i) => (
          <div class="bar-col" key={i} title={`${l}: ${values[i] ?? 0}${compare ? ` / ${compare[i] ?? 0}` : ''}`}>
            <div class="bar-pair">
              <div class="bar c1" style={{ height: `${((values[i] ?? 0) / max) * 100}%` }} />
              {compare ? <div class="bar c2" style={{ height: `${((compare[i] ?? 0) / max) * 100}%` }} /> : null}
            </div>
            <div class="bar-label">{l}</div>
          </div>
        ))}
      </div>
    </figure>
  );
}

/** A labelled <select> of names; `value` '' shows the placeholder. */
export function Picker({ label, value, options, onChange }: { label: string; value: string; options: string[]; onChange: (v: string) => void }) {
  return (
    <label class="picker">
      {label}{' '}
      <select value={value} onChange={(e) => onChange((e.target as HTMLSelectElement).value)}>
        <option value="">— choose —</option>
        {options.map((o) => (
          <option key={o} value={o}>
            {o}
          </option>
        ))}
      </select>
    </label>
  );
}
