package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/cartodb/carto-appliance/installer"
)

func newConsoleCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "console", Short: "The admin console the agent serves"}
	var passFile string
	set := &cobra.Command{
		Use:   "set-password [--password-file FILE]",
		Short: "Set the admin console's password (its bcrypt hash goes into appliance.yaml): the agent then serves the console",
		Long: `Sets the admin console's password: asked on the terminal (twice), or read from
the first line of --password-file. Only its bcrypt hash is kept (appliance.yaml
console.password_hash). The agent serves the console within seconds, on
https://127.0.0.1:9443 unless console.bind_address and console.port say
otherwise (reach it through an SSH tunnel: ssh -L 9443:127.0.0.1:9443 HOST),
with the router's certificate.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var pw []byte
			var err error
			if passFile != "" {
				if pw, err = readPassphrase("--password-file", passFile); err != nil {
					return err
				}
			} else {
				if pw, err = askPassword(); err != nil {
					return err
				}
			}
			url, err := installer.SetConsolePassword(cmd.Context(), pathsFrom(cmd), pw)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Console password set; the agent serves the console at %s within seconds\n", url)
			return nil
		},
	}
	set.Flags().StringVar(&passFile, "password-file", "", "read the password from this file's first line (default: ask on the terminal)")
	cmd.AddCommand(set)
	return cmd
}

// askPassword reads a password twice from the terminal, without echo.
func askPassword() ([]byte, error) {
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return nil, usageError{fmt.Errorf("no terminal to ask the password on: give --password-file FILE")}
	}
	fmt.Fprint(os.Stderr, "Console password: ")
	pw, err := term.ReadPassword(fd)
	fmt.Fprintln(os.Stderr)
	if err != nil {
		return nil, err
	}
	fmt.Fprint(os.Stderr, "Again: ")
	again, err := term.ReadPassword(fd)
	fmt.Fprintln(os.Stderr)
	if err != nil {
		return nil, err
	}
	if string(pw) != string(again) {
		return nil, usageError{fmt.Errorf("the two passwords differ: nothing was changed")}
	}
	return pw, nil
}
