#!/bin/sh
# The sshd target of docker-compose.yml: its host key and the key the
# gateway logs in with come from deploy/secrets (go run ./deploy/gensecrets).
set -e
install -m 600 /run/secrets/sshd_host_key /etc/ssh/ssh_host_ed25519_key
install -d -m 700 -o deploy -g deploy /home/deploy/.ssh
install -m 600 -o deploy -g deploy /run/secrets/box_key_pub /home/deploy/.ssh/authorized_keys
exec /usr/sbin/sshd -D -e -o HostKey=/etc/ssh/ssh_host_ed25519_key -o PasswordAuthentication=no -o PermitRootLogin=no
