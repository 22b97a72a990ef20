// The guest program of the webserver appliance (bundle it and boot it as /app/main.js):
// boots, starts the webserver and the ping-pong service on our drivers, and runs until
// SIGTERM/SIGINT (then stops cleanly and exits 0). Bad flags: exit status 2.
import { boot } from '../../kernel/guest/boot.js';
import { type GuestApplianceArgs, parseGuestApplianceArgs, startGuestAppliance } from './webserver-duplex-appliance.js';

boot(
  'webserver',
  async (ctx) => {
    let args: GuestApplianceArgs;
    try {
      args = parseGuestApplianceArgs(ctx.args);
    } catch (err) {
      ctx.log((err as Error).message);
      return 2;
    }
    const app = await startGuestAppliance(ctx, args);
    ctx.stage('listening');
    await new Promise<void>((resolve) => {
      process.once('SIGTERM', resolve);
      process.once('SIGINT', resolve);
    });
    await app.close();
    ctx.log(`stopped; vsock ${JSON.stringify(app.vsock.stats)}; fs ${JSON.stringify(app.fs.stats)}`);
    return 0;
  },
  { dmaPages: 24, lockCode: 'after-listening' },
);
