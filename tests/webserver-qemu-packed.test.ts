// The appliance in QEMU with its vhost-user devices given packed=on, on each machine:
// our guest drivers run the vsock rings packed (virtio 1.2, 2.8) against our daemon's
// device; the virtio-fs rings stay split (Debian's virtiofsd 7.2 offers no packed
// layout, and QEMU masks it for vhost-user-fs): tests/support/webserver-qemu-suite.ts.
import { webserverQemuTests } from './support/webserver-qemu-suite.js';

webserverQemuTests({ file: 'webserver-qemu-packed', packed: true });
