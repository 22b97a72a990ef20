// The appliance in QEMU with the launcher's vhost-user devices (split rings, virtio 1.2
// 2.7) on each machine: tests/support/webserver-qemu-suite.ts.
import { webserverQemuTests } from './support/webserver-qemu-suite.js';

webserverQemuTests({ file: 'webserver-qemu', packed: false });
