import { request } from "node:http";
import { connect, type Socket } from "node:net";

export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  json(): Record<string, any>;
}

/** An HTTP request with every header under the test's control (fetch would set Host and Origin itself). */
export function rawRequest(
  url: string,
  options: { method?: string; path: string; headers?: Record<string, string>; body?: string | Buffer },
): Promise<RawResponse> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request(
      { hostname, port, method: options.method ?? "GET", path: options.path, headers: options.headers ?? {}, setHost: !(options.headers && "Host" in options.headers) },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const body = Buffer.concat(chunks).toString("utf8");
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json: () => JSON.parse(body) });
        });
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    if (options.body !== undefined) req.write(options.body);
    req.end();
  });
}

/** A raw TCP connection to the daemon, for clients that misbehave below HTTP. */
export function rawSocket(url: string): Promise<Socket> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => resolve(socket));
    socket.on("error", reject);
  });
}

/** Resolves when the server closes the socket (with whatever it sent first). */
export function closed(socket: Socket): Promise<string> {
  return new Promise((resolve) => {
    let data = "";
    socket.on("data", (d) => (data += d.toString("utf8")));
    socket.on("close", () => resolve(data));
    socket.on("error", () => {});
  });
}
