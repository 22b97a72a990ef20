// A webserver on node:net and a folder of files, in one call: for tests, host-side
// benchmarks and trying the site. Binds 127.0.0.1.
import { listenNet } from '../../appliance/webserver/listen/net-listen.js';
import { NodeSiteFiles } from '../../appliance/webserver/files/node-site-files.js';
import { WebServer, type WebServerOptions } from '../../appliance/webserver/server/web-server.js';

export interface HostWebServer {
  readonly server: WebServer;
  readonly port: number;
  readonly url: string;
  close(): Promise<void>;
}

/** `opts.files` replaces the NodeSiteFiles over `root` (a wrapped or fake SiteFiles in tests). */
export async function startHostWebServer(root: string, opts: Partial<WebServerOptions> = {}, port = 0): Promise<HostWebServer> {
  const server = new WebServer({ ...opts, files: opts.files ?? new NodeSiteFiles(root) });
  let handle;
  try {
    handle = await listenNet(port, server.handleConnection);
  } catch (err) {
    server.close();
    throw err;
  }
  const h = handle;
  return {
    server,
    port: h.port,
    url: `http://127.0.0.1:${h.port}/`,
    async close() {
      server.close();
      await h.close();
    },
  };
}
