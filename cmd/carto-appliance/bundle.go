package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cartodb/carto-appliance/installer"
)

func newBundleCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bundle",
		Short: "Check an air-gap bundle, or load its images ahead of an install or upgrade",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "verify FILE",
		Short: "Read the whole bundle against its signed index and say what it holds; change nothing",
		Long: `Reads the whole bundle as install --bundle and upgrade --bundle do first: its index must
be signed by a release key this binary trusts, the release in it signed, and every file
of the size and sha256 the index lists. Nothing is changed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pr := newProgress(os.Stderr)
			idx, err := installer.CheckBundle(cmd.Context(), installer.Options{Reporter: pr}, args[0])
			pr.Close()
			if err != nil {
				return err
			}
			names := make([]string, len(idx.Images))
			for i, img := range idx.Images {
				names[i] = img.Name
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: a whole, signed bundle of CARTO %s (built %s): %d images, %.1f GiB once loaded: %s\n",
				args[0], idx.Version, idx.Created.Format("2006-01-02"), len(idx.Images), float64(idx.UnpackedSize())/(1<<30), strings.Join(names, ", "))
			for _, a := range idx.Appliances {
				fmt.Fprintf(cmd.OutOrStdout(), "carries carto-appliance %s for %s\n", a.Version, a.Platform)
			}
			return nil
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "load FILE",
		Short: "Load a bundle's images into the Docker engine ahead of an install or upgrade from it",
		Long: `Checks the bundle whole (as bundle verify), then loads its images into the Docker
engine, each tagged carto-bundle/<name>:<version>; images the engine has are not loaded
again. An install or upgrade from the bundle later only tags them: load during the day,
upgrade in the maintenance window. The stack is not touched.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pr := newProgress(os.Stderr)
			res, err := installer.LoadBundle(cmd.Context(), installer.Options{Reporter: pr, Progress: pr.Pulls()}, args[0])
			pr.Close()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Loaded the images of CARTO %s: %d loaded, %d already there\n", res.Version, len(res.Loaded), len(res.Present))
			return nil
		},
	})
	return cmd
}
