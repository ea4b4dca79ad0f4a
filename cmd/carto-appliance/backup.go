package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/cartodb/carto-appliance/host"
	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/internal/boundedread"
)

// writeNewFile writes a new file (0600, never over an existing one) with
// write, and removes it when write fails: no partial file is left that
// could be taken for a whole one.
func writeNewFile(path string, write func(io.Writer) error) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return usageError{fmt.Errorf("-o %s: %w (give a new file)", path, err)}
	}
	err = write(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// readPassphrase reads a passphrase file (its first line): never a flag's
// value, which ps and the shell's history would show. flag names the flag
// in the error.
func readPassphrase(flag, file string) ([]byte, error) {
	if file == "" {
		return nil, nil
	}
	b, err := boundedread.Secret(file)
	if err != nil {
		return nil, usageError{fmt.Errorf("%s: %w", flag, err)}
	}
	return b, nil
}

func newBackupCmd() *cobra.Command {
	var out, passFile string
	cmd := &cobra.Command{
		Use:   "backup [-o FILE] [--passphrase-file FILE]",
		Short: "Write a backup that restore brings a fresh VM back to: settings, certificates, licence, release and database",
		Long: `Writes one file (0600, never over an existing one) with what brings a fresh VM to
this node's state: the config dir (appliance.yaml, the customer package, the
licence, the router's certificate and KEY), the state that goes with it (the
installed release, the appliance's CA, a tier layout's join token) and the
embedded database with its roles, dumped consistently while the stack runs.
With --passphrase-file the file is encrypted (scrypt, AES-256-GCM); without,
it holds those secrets in clear: keep it as you keep the router's key.
appliance.yaml's backup section has the agent take them by itself
(backup.every, backup.keep, backup.dir, backup.passphrase_file).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			pass, err := readPassphrase("--passphrase-file", passFile)
			if err != nil {
				return err
			}
			if out == "" {
				h, _ := os.Hostname()
				out = fmt.Sprintf("carto-backup-%s-%s.cbk", h, time.Now().UTC().Format("20060102T150405Z"))
			}
			var res *installer.BackupResult
			if err := writeNewFile(out, func(w io.Writer) (err error) {
				res, err = installer.Backup(cmd.Context(), w, installer.BackupOptions{Paths: pathsFrom(cmd), Passphrase: pass})
				return err
			}); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			enc := "not encrypted: it holds the router's key and the customer package's secrets in clear"
			if res.Header.Encrypted {
				enc = "encrypted"
			}
			fmt.Fprintf(w, "Backup: %s (CARTO %s, %d files, database %s; %s)\n", out, orDash(res.Header.CartoVersion), len(res.Header.Entries), yesNo(res.Database), enc)
			for _, n := range res.Notes {
				fmt.Fprintf(w, "Note: %s\n", n)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "the file to write (default carto-backup-HOST-TIME.cbk here)")
	cmd.Flags().StringVar(&passFile, "passphrase-file", "", "encrypt with the passphrase on this file's first line")
	return cmd
}

func yesNo(b bool) string {
	if b {
		return "included"
	}
	return "not included"
}

func newRestoreCmd() *cobra.Command {
	var passFile, binary string
	var noService bool
	cmd := &cobra.Command{
		Use:   "restore FILE [--passphrase-file FILE]",
		Short: "Bring a fresh VM to a backup's state: same release, settings, certificates, licence and database",
		Long: `Restores a backup (carto-appliance backup) on a fresh VM, instead of install: the
whole file is checked first (format, integrity, passphrase, the carto-appliance
that wrote it), and a backup refused changes nothing. Then the settings and
state are put in place, the installed release's images pulled, the database
started alone and restored with its roles, the stack converged, and the agent
registered. A node that is installed already is refused, and one whose Docker
engine holds the backup's project (an uninstall that kept its volumes): restore
replaces nothing (uninstall with --purge first). A restore that fails once it
has begun (an image not pulled, a database not restored) is undone: its files,
containers, volumes and firewall rules removed, ready for the next try.`,
		Args: cobra.ExactArgs(1),
		PreRunE: func(cmd *cobra.Command, args []string) error {
			if noService {
				return nil
			}
			return host.CheckService(host.ServiceOptions{Paths: pathsFrom(cmd), Binary: binary})
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			pass, err := readPassphrase("--passphrase-file", passFile)
			if err != nil {
				return err
			}
			paths := pathsFrom(cmd)
			file := args[0]
			absFile(&file)
			return runConverge(cmd, true, func(o installer.Options) (*installer.Result, error) {
				o.Paths = paths
				res, err := installer.Restore(cmd.Context(), installer.RestoreOptions{Options: o, File: file, Passphrase: pass})
				if err != nil || noService {
					return res, err
				}
				if err := host.InstallService(cmd.Context(), host.ServiceOptions{Paths: paths, Binary: binary}); err != nil {
					return res, fmt.Errorf("the stack is restored, but its agent did not start: %w", err)
				}
				return res, nil
			})
		},
	}
	cmd.Flags().StringVar(&passFile, "passphrase-file", "", "the passphrase of an encrypted backup, on this file's first line")
	cmd.Flags().StringVar(&binary, "binary", "", "the carto-appliance executable the systemd service runs (default: this one if in "+host.DefaultBinary+" or "+host.PackageBinary+")")
	cmd.Flags().BoolVar(&noService, "no-service", false, "restore in the foreground and do not register the systemd agent")
	return cmd
}
