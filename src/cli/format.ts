/** How `kekahyde list`, `ps` and `show` write sizes, times and tables: as `ollama` writes them. */

const UNITS: Array<[number, string]> = [
  [1e12, "TB"],
  [1e9, "GB"],
  [1e6, "MB"],
  [1e3, "KB"],
];

/** Decimal units, as Ollama's format.HumanBytes: "999 B", "5.0 MB", "12 MB", "2 GB", "4.7 GB". */
export function humanBytes(bytes: number): string {
  for (const [size, unit] of UNITS) {
    if (bytes >= size) {
      const value = bytes / size;
      if (value >= 10 || value === Math.trunc(value)) return `${Math.trunc(value)} ${unit}`;
      return `${value.toFixed(1)} ${unit}`;
    }
  }
  return `${bytes} B`;
}

/** A parameter count as Ollama's format.HumanNumber writes it: "8.0B", "494.03M", "12M", "4K". */
export function humanNumber(n: number): string {
  if (n >= 1e9) return Number.isInteger(n / 1e9) ? `${n / 1e9}B` : `${(n / 1e9).toFixed(1)}B`;
  if (n >= 1e6) return Number.isInteger(n / 1e6) ? `${n / 1e6}M` : `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(0)}K`;
  return String(n);
}

function humanDuration(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  if (seconds < 1) return "Less than a second";
  if (seconds === 1) return "1 second";
  if (seconds < 60) return `${seconds} seconds`;
  const minutes = Math.floor(seconds / 60);
  if (minutes === 1) return "About a minute";
  if (minutes < 60) return `${minutes} minutes`;
  const hours = Math.round(ms / 3_600_000);
  if (hours === 1) return "About an hour";
  if (hours < 48) return `${hours} hours`;
  if (hours < 24 * 7 * 2) return `${Math.floor(hours / 24)} days`;
  if (hours < 24 * 30 * 2) return `${Math.floor(hours / 24 / 7)} weeks`;
  if (hours < 24 * 365 * 2) return `${Math.floor(hours / 24 / 30)} months`;
  return `${Math.floor(ms / 3_600_000 / 24 / 365)} years`;
}

/** "3 minutes ago", "4 minutes from now", "Forever" (more than 20 years ahead), as Ollama's format.HumanTime. */
export function humanTime(at: Date, now = Date.now()): string {
  const delta = now - at.getTime();
  if (delta < -20 * 365 * 24 * 3_600_000) return "Forever";
  return delta < 0 ? `${humanDuration(-delta)} from now` : `${humanDuration(delta)} ago`;
}

/** Columns padded to their widest cell and three spaces apart, like Ollama's tables; no trailing spaces. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  return [header, ...rows].map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] + 3))).join("").trimEnd()).join("\n");
}
